"""Arguments of one test layer per drop method, strong enough that every method visibly acts."""

DROP_ARGS = {
    "dropout": dict(retain_rate=0.5),
    "spatial_dropout": dict(retain_rate=0.5),
    "spatial_scale": dict(retain_rate=0.2),
    "selectout": dict(top_rate=0.5, retain_rate=0.6),
    "selectscale": dict(top_rate=0.3, retain_rate=0.0),
    "dropblock": dict(retain_rate=0.6, block_size=3),
    "select_dropblock": dict(top_rate=0.5, retain_rate=0.5, block_size=3),
}
