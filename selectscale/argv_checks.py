"""Checks of a ``train.py`` command line before Hydra runs, each failing with one line (Hydra itself reports
such problems over several lines, with exit status 1, and in a multirun only when the bad job's turn comes):
overrides that do not compose (every value of every sweep; one composition, plus one per further option of a swept
config group) and run-directory values
Hydra cannot use. The reasons come from Hydra's and OmegaConf's exception attributes, never their message text.
"""

from __future__ import annotations

from pathlib import Path

from selectscale.engine.rundir import enclosing_run

# Hydra command-line flags: those after which nothing is composed as usual (skip the check), and those
# that take a value (skip the value).
_UNCHECKED_FLAGS = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir", "-h", "--help",
                    "--hydra-help", "-i", "--info", "-sc", "--shell-completion", "--experimental-rerun", "--version"}
_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package"}


def config_overrides(argv: list[str]) -> list[str] | None:
    """The ``key=value`` overrides of a train.py command line (Hydra's own left out), or None to skip."""
    overrides, skip_next = [], False
    for argument in argv:
        if skip_next:
            skip_next = False
        elif argument.split("=")[0] in _UNCHECKED_FLAGS:
            return None
        elif argument in _FLAGS_WITH_VALUE:
            skip_next = True
        elif not argument.startswith("-") and not argument.lstrip("+~").startswith(("hydra.", "hydra/")):
            overrides.append(argument)
    return overrides


def _group_hint(override: str, config_dir: Path | None) -> str | None:
    """The two config folders that are not plain groups: ``experiment`` (added with +) and ``paper`` (table specs)."""
    key = override.split("=", 1)[0]
    names = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml")) if config_dir else []
    if key.lstrip("+~") == "paper":
        return (f"{override}: configs/paper/ holds the table specs that `python -m selectscale.experiments run "
                "NAME` reads, not train.py settings; for one row of a table use +experiment=NAME")
    if key == "experiment":
        return (f"{override}: an experiment file adds a whole setting: write +experiment=NAME"
                + (f" (one of {', '.join(names)})" if names else ""))
    return None


def _explain(error: Exception, override: str, config_dir: Path | None = None) -> str:
    """Hydra's multi-line composition error as one line naming the override and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    hint = _group_hint(override, config_dir)
    if hint is not None:
        return hint
    text, cause = str(error), error.__cause__
    # Hydra's and OmegaConf's exception attributes, never their message text (which changes between releases).
    if isinstance(error, MissingConfigException) and error.options:
        group = (error.missing_cfg_file or "").split("/")[0]
        return f"{override}: no such option in configs/{group}/; choose one of {', '.join(error.options)}"
    if isinstance(error, OverrideParseException):
        return (f"{override}: cannot parse it ({text.splitlines()[0]}); see "
                "https://hydra.cc/docs/advanced/override_grammar/basic/")
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        key = override.lstrip("+~").split("=")[0]
        return (f"{override}: there is no key {key!r} ({str(cause).splitlines()[0]}); check the spelling, "
                "`python train.py --cfg job` lists every key")
    detail = str(cause).splitlines()[0] if cause is not None else text.splitlines()[0]
    return f"{override}: {detail}"


def _first_values(parsed: list) -> list[str]:
    """The override list a multirun's first job composes: every sweep at its first value."""
    return [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
            else o.input_line for o in parsed]


def _empty_sweep(parsed: list) -> str | None:
    """One line for a sweep without values (a glob() that matches nothing: Hydra would run no job of it)."""
    from hydra.core.global_hydra import GlobalHydra

    for override in parsed:
        if override.is_sweep_override() and next(iter(override.sweep_string_iterator()), None) is None:
            options = GlobalHydra.instance().config_loader().get_group_options(override.key_or_group)
            where = f"; configs/{override.key_or_group}/ holds {', '.join(options)}" if options else ""
            return f"{override.input_line}: the sweep has no values, so no job would run; give it at least one{where}"
    return None


def _further_values(parsed: list) -> list[tuple[int, str, bool]]:
    """(position, ``key=value``, whether the key is a config group) for every sweep value after the first."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    further = []
    for index, override in enumerate(parsed):
        if override.is_sweep_override():
            is_group = bool(loader.get_group_options(override.key_or_group))  # once per override, not per value
            further += [(index, f"{override.get_key_element()}={value}", is_group)
                        for value in list(override.sweep_string_iterator())[1:]]
    return further


def _value_error(cfg, concrete: str, parser) -> str | None:
    """Why assigning one sweep value to the composed config fails (the typed check its job's composition
    would make: a missing key, a wrong type), or None. ``parser``: the command line's OverridesParser."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    override = parser.parse_override(concrete)  # the value as its job will read it
    if override.is_delete():
        return None
    try:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    except OmegaConfBaseException as error:
        return f"{concrete}: {str(error).splitlines()[0]}"
    return None


def _compose(config_name: str, overrides: list[str], varied: str, config_dir: Path) -> tuple[object, str | None]:
    """(the config, None), or (None, one line saying why Hydra cannot compose ``overrides``, naming ``varied`` or
    the override the error is about)."""
    from hydra import compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(config_name=config_name, overrides=overrides), None
    except (HydraException, OmegaConfBaseException) as error:
        return None, _explain(error, varied or _culprit(error, overrides), config_dir)


def composition_error(argv: list[str], config_dir: Path, config_name: str = "train") -> str | None:
    """One line saying why Hydra cannot compose train.py's config from ``argv``, or None when it can.

    Hydra itself reports such errors over several lines with exit status 1 (and in a multirun only when
    the bad job's turn comes); this check runs first so that train.py fails at once, on one line. It composes
    the first job's config once, and once more for each further option of a swept config group (a few files);
    every other sweep value (seeds, rates: any number of them) is assigned to that config, the typed check
    its job's composition would make, so a 64-seed sweep costs one composition."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    overrides = config_overrides(argv)
    if not overrides:
        return None
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())  # for glob()
        parsed = []
        for override in overrides:  # a syntax error names its own override
            try:
                parsed.extend(parser.parse_overrides([override]))  # (sets the loader glob() needs)
            except OverrideParseException as error:
                return _explain(error, override)
        if problem := _empty_sweep(parsed):
            return problem
        first = _first_values(parsed)
        cfg, problem = _compose(config_name, first, "", config_dir)
        if problem:
            return problem
        for index, concrete, is_group in _further_values(parsed):
            problem = (_compose(config_name, [*first[:index], concrete, *first[index + 1:]], concrete, config_dir)[1]
                       if is_group else _value_error(cfg, concrete, parser))
            if problem:
                return problem
    return None


def _culprit(error: Exception, overrides: list[str]) -> str:
    """The override a composition error is about: the key OmegaConf names (``full_key``), or the group of the
    config file Hydra could not find (``missing_cfg_file``); all overrides when neither says."""
    key = getattr(error.__cause__, "full_key", None) or (getattr(error, "missing_cfg_file", None) or "").split("/")[0]
    for override in overrides:
        if key and override.lstrip("+~").split("=")[0] == key:
            return override
    return " ".join(overrides)


def run_dir_error(argv: list[str], config_dir: Path | None = None) -> str | None:
    """One line if ``hydra.run.dir`` / ``hydra.sweep.dir`` / ``output_dir`` on the command line cannot be used
    (Hydra would fail with a traceback and status 1): a value Hydra cannot parse (non-ASCII unquoted), an
    interpolation that does not resolve, a file or a dangling link in the way, a folder that is not writable,
    or a place inside another run's directory."""
    for argument in argv:
        key, _, value = argument.lstrip("+").partition("=")
        if key not in ("hydra.run.dir", "hydra.sweep.dir", "output_dir") or not value:
            continue
        problem = _unparsable(key, value, argument) or (
            _unresolvable(key, value, argument, config_dir) if "${" in value else _path_problem(key, value))
        if problem:
            return problem
    return None


def _unparsable(key: str, value: str, argument: str) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        OverridesParser.create().parse_overrides([argument])
    except OverrideParseException as error:
        return (f"{key}={value}: Hydra cannot parse this value ({str(error).splitlines()[0][:100]}); quote it, "
                f"e.g. '{key}=\"{value}\"' (single quotes around the whole argument)")
    return None


def _unresolvable(key: str, value: str, argument: str, config_dir: Path | None) -> str | None:
    """An interpolation in the path that names no key (Hydra's own runtime keys resolve later: not checked)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if config_dir is None:
        return None
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[argument], return_hydra_config=True)
        OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except OmegaConfBaseException as error:
        return f"{key}={value}: {str(error).splitlines()[0]}; fix the ${{...}} interpolation"
    except Exception:  # noqa: BLE001  (anything else: Hydra reports it itself)
        return None
    return None


def _path_problem(key: str, value: str) -> str | None:
    import os

    path = Path(value).absolute()
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            return f"{key}={value}: {link} is a link to {os.readlink(link)}, which does not exist; fix or remove it"
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{key}={value}: {existing} is a file, not a folder; choose another {key}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{key}={value}: {existing} is not writable; choose another {key}"
    if (inside := enclosing_run(path)) is not None:  # before Hydra makes the folder in it
        return f"{key}={value}: run directory {value} is inside the run directory {inside}; choose another {key}"
    return None
