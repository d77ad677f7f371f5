"""Checks of a ``train.py`` command line before Hydra runs, each failing with one line (Hydra itself reports
such problems over several lines, with exit status 1, and in a multirun only when the bad job's turn comes):
overrides that do not compose (every value of every sweep; one composition, plus one per further option of a swept
config group), an option of one of Hydra's own groups that is not installed (``hydra/launcher=jobllib``), a key
added with ``+`` that the typed schema does not declare, an ``${oc.env:VAR}`` whose variable is not set, and
run-directory values Hydra cannot use. The reasons come from Hydra's and OmegaConf's exception attributes and
from our own look-ups (Hydra's config search path, the schema, the file system), never their message text.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from selectscale.runs.directory import enclosing_run

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


def hydra_group_overrides(argv: list[str]) -> list[str]:
    """The overrides of Hydra's own config groups on a train.py command line (``hydra/launcher=joblib``)."""
    found, skip_next = [], False
    for argument in argv:
        if skip_next:
            skip_next = False
        elif argument in _FLAGS_WITH_VALUE:
            skip_next = True
        elif not argument.startswith("-") and "=" in argument and argument.lstrip("+~").startswith("hydra/"):
            found.append(argument)
    return found


# Hydra's plugins that this project documents, and how to install them (pyproject's extras).
_PLUGIN_HINTS = {"hydra/launcher": "joblib comes with `pip install hydra-joblib-launcher` (the dev extra), "
                                   "submitit_slurm and submitit_local with `pip install -e '.[slurm]'`"}


def _hydra_group_error(texts: list[str], parser, loader) -> str | None:
    """One line for an option of one of Hydra's own groups (launcher, sweeper, job_logging...) that is not on
    Hydra's config search path (a misspelling, a plugin not installed), or a group Hydra does not have. The
    options are read from the search path (``get_group_options``: Hydra's own configs and every installed
    plugin's), never from Hydra's message."""
    from hydra.errors import OverrideParseException

    for text in texts:
        try:
            override = parser.parse_overrides([text])[0]
        except OverrideParseException as error:
            return _explain(error, text)
        group = override.key_or_group
        if override.is_delete():
            continue
        options = loader.get_group_options(group)
        if not options:
            groups = [f"hydra/{name}" for name in sorted(loader.list_groups("hydra"))]
            close = difflib.get_close_matches(group, groups, n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            return f"{text}: Hydra has no config group {group}; {guess}its groups are {', '.join(groups)}"
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        for value in values:
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                guess = f"did you mean {group}={close[0]}? " if close else ""
                installed = f"; {_PLUGIN_HINTS[group]}" if group in _PLUGIN_HINTS else ""
                return (f"{group}={value}: no such option of {group}; {guess}the options installed here are "
                        f"{', '.join(options)}{installed}")
    return None


def _undeclared_added_key(parsed: list, loader) -> str | None:
    """One line for a key added with ``+`` (or ``++``) that the typed schema does not declare: Hydra adds any key
    given so, even to a typed group, and the run would silently ignore it (``+trainer.some_typo=3``). A config
    group selected with + (``+experiment=NAME``) is not a key. Groups listed in the schema's
    EXTRA_KEYS_ALLOWED take any key (none does today)."""
    from selectscale.engine.schema import undeclared_key

    for override in parsed:
        if not (override.is_add() or override.is_force_add()):
            continue
        key = override.key_or_group
        if "/" in key or loader.get_group_options(key):  # a config group: Hydra checks its options itself
            continue
        found = undeclared_key(key)
        if found is None:
            continue
        group, known = found
        name = key.split(".")[group.count(".") + 1 if group else 0]
        prefix = f"{group}." if group else ""
        close = difflib.get_close_matches(name, known, n=1)
        guess = f"did you mean {prefix}{close[0]} (set without +)? " if close else ""
        where = f"{group} has" if group else "the config's top level has"
        return (f"{override.input_line}: {where} no key {name!r}, and a key added with + must be one the schema "
                f"declares (selectscale/engine/schema.py); {guess}its keys are {', '.join(known)}")
    return None


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

    from selectscale.engine.config import unset_variable_problem

    overrides = config_overrides(argv)
    hydra_groups = hydra_group_overrides(argv) if overrides is not None else []
    if not overrides and not hydra_groups:
        return None
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)  # for glob()
        if problem := _hydra_group_error(hydra_groups, parser, loader):
            return problem
        parsed = []
        for override in overrides:  # a syntax error names its own override
            try:
                parsed.extend(parser.parse_overrides([override]))  # (sets the loader glob() needs)
            except OverrideParseException as error:
                return _explain(error, override)
        if problem := _empty_sweep(parsed) or _undeclared_added_key(parsed, loader):
            return problem
        first = _first_values(parsed)
        cfg, problem = _compose(config_name, first, "", config_dir)
        if problem or (problem := unset_variable_problem(cfg)):  # an ${oc.env:VAR} whose VAR is not set
            return problem
        if is_multirun(argv) and (problem := _sweep_folder_problem(argv, parsed, config_name)):
            return problem
        for index, concrete, is_group in _further_values(parsed):
            problem = (_compose(config_name, [*first[:index], concrete, *first[index + 1:]], concrete, config_dir)[1]
                       if is_group else _value_error(cfg, concrete, parser))
            if problem:
                return problem
    return None


def is_multirun(argv: list[str]) -> bool:
    """Whether a train.py command line starts a multirun (``-m``, ``--multirun`` or ``hydra.mode=MULTIRUN``)."""
    return any(a in ("-m", "--multirun") or (a.startswith("hydra.mode=") and "MULTIRUN" in a) for a in argv)


def _sweep_folder_problem(argv: list[str], parsed: list, config_name: str) -> str | None:
    """One line when the folder of a sweep's job would be longer than the file system allows (ENAMETOOLONG):
    ``hydra.sweep.subdir`` is the job's overrides by default (``drop=selectscale,seed=1,...``), which grows with
    every override. The job with the longest value of each sweep has the longest folder; Hydra composes it once
    (``hydra.job.override_dirname`` is its own, with its exclude_keys) and the file system's limits are read."""
    from hydra import compose
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    longest = [max((f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()), key=len)
               if o.is_sweep_override() else o.input_line for o in parsed]
    own = [a for a in argv if a.lstrip("+~").startswith(("hydra.", "hydra/")) and not a.startswith("hydra.mode=")]
    try:
        cfg = compose(config_name=config_name, overrides=[*longest, *own], return_hydra_config=True)
        folder = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir", throw_on_resolution_failure=True)),
                      str(OmegaConf.select(cfg, "hydra.sweep.subdir", throw_on_resolution_failure=True)))
    except (OmegaConfBaseException, ValueError, TypeError):  # a runtime key only the launcher knows: not checked
        return None
    except Exception:  # noqa: BLE001  (Hydra reports it itself)
        return None
    path = folder.absolute()
    label = f"the folder of the sweep's job with the longest values, {_short(str(folder))}"
    problem = _too_long(label, "hydra.sweep.subdir", path, _deepest_existing(path))
    return problem and (f"{problem}, e.g. 'hydra.sweep.subdir=${{hydra.job.num}}' (or fewer overrides: the default "
                        "subdir names them all)")


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
    interpolation that does not resolve (an unset environment variable named), a folder name or a path longer
    than the file system allows (ENAMETOOLONG), a file or a dangling link in the way (NotADirectoryError), a
    folder that is not writable or on a read-only file system, or a place inside another run's directory. A value
    with interpolations is checked as it resolves with the default config (so ``${model.name}`` counts as the
    default model's name: a few characters either way)."""
    for argument in argv:
        key, _, value = argument.lstrip("+").partition("=")
        if key not in ("hydra.run.dir", "hydra.sweep.dir", "output_dir") or not value:
            continue
        problem, resolved = _unparsable(key, value, argument), value
        if problem is None and "${" in value:
            problem, resolved = _unresolvable(key, value, argument, config_dir)
        if problem is None and resolved is not None:
            problem = _path_problem(key, value, resolved)
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


def _unresolvable(key: str, value: str, argument: str, config_dir: Path | None) -> tuple[str | None, str | None]:
    """(one line for an interpolation in the path that does not resolve, None) or (None, the resolved path, or
    None where it cannot be known yet: Hydra's own runtime keys resolve later, and are not checked)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from selectscale.engine.config import unset_variable_message, unset_variables

    if names := unset_variables(value):
        return unset_variable_message(key, value, names[0]), None
    if config_dir is None:
        return None, None
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[argument], return_hydra_config=True)
        resolved = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except OmegaConfBaseException as error:
        return f"{key}={value}: {str(error).splitlines()[0]}; fix the ${{...}} interpolation", None
    except Exception:  # noqa: BLE001  (anything else: Hydra reports it itself)
        return None, None
    return None, str(resolved) if resolved is not None else None


def _short(text: str, limit: int = 120) -> str:
    """``text``, or its start and end around '...' when longer than ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 4:]}"


# Bytes below the run directory that a run's own files take (tensorboard/events.out.tfevents.<time>.<host>.<pid>.<n>,
# checkpoint.prev.pt.sha256...): a run directory must leave that much of the file system's path limit.
_RUN_FILES_DEPTH = 128


def _path_limit(folder: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(folder, name)
    except (OSError, ValueError):
        return default


def _deepest_existing(path: Path) -> Path:
    """The deepest folder of ``path`` (absolute) that exists, looked up from the root down, so that a component
    too long to look up (ENAMETOOLONG) or a file in the way ends the walk instead of raising."""
    existing = Path(path.anchor)
    for part in path.parts[1:]:
        try:
            if not (existing / part).is_dir():
                break
        except OSError:
            break
        existing = existing / part
    return existing


def _too_long(label: str, key: str, path: Path, existing: Path) -> str | None:
    """One line (starting with ``label``) when a folder name of ``path`` is longer than the file system's NAME_MAX,
    or the path (with the files a run writes below it) longer than its PATH_MAX: ENAMETOOLONG, named, before Hydra
    meets it; the fix is a shorter ``key``."""
    name_max = _path_limit(existing, "PC_NAME_MAX", 255)
    for part in path.parts[1:]:
        if len(os.fsencode(part)) > name_max:
            return (f"{label}: the folder name {_short(part, 40)} is {len(os.fsencode(part))} bytes, "
                    f"longer than the {name_max} bytes the file system allows for one name (ENAMETOOLONG); choose "
                    f"a shorter {key}")
    path_max = _path_limit(existing, "PC_PATH_MAX", 4096)
    if len(os.fsencode(str(path))) + _RUN_FILES_DEPTH >= path_max:
        return (f"{label}: the path is {len(os.fsencode(str(path)))} bytes, and with the files a run "
                f"writes in it (up to {_RUN_FILES_DEPTH} more) longer than the {path_max} bytes the file system "
                f"allows (ENAMETOOLONG); choose a shorter {key}")
    return None


def _path_problem(key: str, value: str, resolved: str | None = None) -> str | None:
    """One line for a run directory ``resolved`` (the value ``value`` of ``key``, worked out) that cannot be
    made or used; None when it can. Any other refusal of the file system met while looking is named too."""
    path = Path(value if resolved is None else resolved).absolute()
    try:
        existing = _deepest_existing(path)
        problem = _too_long(f"{key}={_short(value)}", key, path, existing)
        if problem is None:
            problem = _blocked(key, value, path, existing)
    except OSError as error:
        where = error.filename or path
        return f"{key}={_short(value)}: {where} cannot be used ({error.strerror or error}); choose another {key}"
    return problem


def _blocked(key: str, value: str, path: Path, existing: Path) -> str | None:
    """A dangling link, a file where a folder goes, a folder that is not writable, or a run directory around."""
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            return f"{key}={value}: {link} is a link to {os.readlink(link)}, which does not exist; fix or remove it"
    blocker = existing / path.relative_to(existing).parts[0] if existing != path else None
    if blocker is not None and os.path.lexists(blocker):  # a file (or anything but a folder) in the way
        return f"{key}={value}: {blocker} is a file, not a folder; choose another {key}"
    if _read_only_file_system(existing):
        return f"{key}={value}: {existing} is on a read-only file system; choose another {key}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{key}={value}: {existing} is not writable; choose another {key}"
    if (inside := enclosing_run(path)) is not None:  # before Hydra makes the folder in it
        return f"{key}={value}: run directory {value} is inside the run directory {inside}; choose another {key}"
    return None


def _read_only_file_system(folder: Path) -> bool:
    """Whether ``folder`` is on a file system mounted read-only (which stops root too, unlike permissions)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False
