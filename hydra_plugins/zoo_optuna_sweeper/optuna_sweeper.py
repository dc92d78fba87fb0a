"""The zoo_optuna sweeper: Hydra's sweeper interface over an Optuna study kept in a database.

Each round asks the study for up to ``n_jobs`` trials, launches one Hydra job per trial
through the configured launcher (local, submitit, SLURM), and tells the study how each
ended: the value the job returned (``monitor``), PRUNED when the job raised
optuna.TrialPruned (zoo/callbacks/pruning.py), FAIL when it raised anything else or
returned None or NaN. The study lives in a database named by ``storage`` (SQLite in
``multirun/<name>/optuna.db`` by default), so the same command resumes it and several
workers pointed at one database share it: ``n_trials`` counts the study's trials, whoever
ran them. Each trial runs in ``<hydra.sweep.dir>/<trial number>/``, so a resumed study's
new trials never land in (and resume from) an earlier trial's folder. Options that cannot
work end the program with one line before any trial runs (SweepConfigError). Optuna is
imported only when a sweep starts: Hydra imports this module on every run to find its
plugins.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    OverrideParseException,
)
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from zoo.errors import RunInterrupted, ZooError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("zoo")

DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
SYNTAX = "choice(a, b), range(start, stop, step), interval(low, high), tag(log, int, interval(...))"


class SweepConfigError(CompactHydraException, ZooError):
    """An option of the sweep that cannot work, found before any trial runs. Hydra prints
    it as its message alone: one line naming the option, the cause and the fix."""


class Parameter:
    """One searched parameter: its Optuna distribution and the override text of a value."""

    def __init__(self, key: str, distribution: Any, texts: dict[Any, str] | None = None):
        self.key = key
        self.distribution = distribution
        self.texts = texts  # categorical values -> override text (lists, quoted strings)

    def override(self, value: Any) -> str:
        if self.texts is not None:
            return f"{self.key}={self.texts[value]}"
        return f"{self.key}={value!r}" if isinstance(value, float) else f"{self.key}={value}"


def parameter(override: Override) -> Parameter:
    """Return the searched parameter that a sweep override describes.

    ``choice(...)`` (or ``a,b,c``) is categorical; ``interval(a, b)`` uniform over floats,
    log-uniform with ``tag(log, ...)``, over ints with ``tag(int, ...)`` (or both tags);
    ``range(start, stop, step)`` the stepped values from start up to stop (excluded).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, sweep = override.get_key_element(), override.value()
    if isinstance(sweep, ChoiceSweep):
        # Optuna stores numbers, booleans and None as they are; anything else (strings, lists,
        # dicts) as the override text, which is also what the job receives.
        texts = list(override.sweep_string_iterator())
        values = [
            element if element is None or isinstance(element, (bool, int, float)) else text
            for element, text in zip(sweep.list, texts, strict=True)
        ]
        return Parameter(
            key, CategoricalDistribution(values), dict(zip(values, texts, strict=True))
        )
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SweepConfigError(
                f"{override.input_line}: the range holds no value; write range(start, stop, "
                "step) with start < stop for a positive step"
            )
        low, high, step = values[0], values[-1], sweep.step
        if all(isinstance(v, int) for v in (low, high, step)):
            return Parameter(key, _distribution(override, IntDistribution, low, high, step=step))
        return Parameter(
            key,
            _distribution(override, FloatDistribution, float(low), float(high), step=float(step)),
        )
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if sweep.start > sweep.end:
            raise SweepConfigError(
                f"{override.input_line}: the low end {sweep.start} is above the high end "
                f"{sweep.end}; write interval(low, high)"
            )
        if "int" in sweep.tags:
            if int(sweep.start) != sweep.start or int(sweep.end) != sweep.end:
                raise SweepConfigError(
                    f"{override.input_line}: an int interval needs whole-number ends, got "
                    f"{sweep.start} and {sweep.end}"
                )
            low, high = int(sweep.start), int(sweep.end)
            return Parameter(
                key, _distribution(override, IntDistribution, low, high, log=log_scale)
            )
        low, high = float(sweep.start), float(sweep.end)
        return Parameter(key, _distribution(override, FloatDistribution, low, high, log=log_scale))
    raise SweepConfigError(
        f"{override.input_line}: the zoo_optuna sweeper takes choice(...), a,b,c, range(...) "
        "and interval(...) (tagged log and/or int: tag(log, int, interval(1, 64)))"
    )


def _distribution(override: Override, distribution: type, *args: Any, **kwargs: Any) -> Any:
    """Return ``distribution(*args, **kwargs)``; raise SweepConfigError on what Optuna refuses."""
    try:
        return distribution(*args, **kwargs)
    except ValueError as error:  # e.g. a log scale over an interval that reaches 0
        raise SweepConfigError(f"{override.input_line}: {error}") from None


class ZooOptunaSweeper(Sweeper):
    """Runs the trials of an Optuna study as Hydra jobs (options: config.py beside this file)."""

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: dict[str, str] | None,
        heartbeat_interval: int | None,
        grace_period: int | None,
    ):
        super().__init__()
        # Checked in check(), called by setup(): an error raised here would reach the user
        # wrapped in Hydra's instantiation message.
        self.study_name = str(study_name)
        self.storage_url = str(storage)
        self.direction = str(direction)
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler_config = sampler  # Hydra configs (_target_: an optuna class), built in check()
        self.pruner_config = pruner
        self.sampler = None
        self.pruner = None
        self.params = dict(params or {})
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.space_covered = False  # set when a grid-like sampler has tried every point

    def check(self) -> None:
        """Build the sampler and pruner and check every option, before anything is written.

        Raises SweepConfigError naming the first option that cannot work and its fix.
        """
        import optuna
        from hydra.utils import instantiate

        from zoo.sweeps import check_storage, displayed_url

        if self.direction not in DIRECTIONS:
            raise SweepConfigError(
                f"hydra.sweeper.direction={self.direction} is not a direction: use minimize or "
                "maximize (min, max)"
            )
        self.direction = DIRECTIONS[self.direction]
        for name in ("n_trials", "n_jobs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SweepConfigError(
                    f"hydra.sweeper.{name}={value}: it must be a whole number of at least 1"
                )
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SweepConfigError(
                    f"hydra.sweeper.{name}={value}: it must be a whole number of seconds of at "
                    "least 1, or null"
                )
        if not self.study_name:
            raise SweepConfigError("hydra.sweeper.study_name is empty: name the study")
        try:
            check_storage(self.storage_url)
        except ZooError as error:
            raise SweepConfigError(
                f"hydra.sweeper.storage={displayed_url(self.storage_url)}: {error}"
            ) from None
        except Exception as error:  # a URL SQLAlchemy cannot even display
            raise SweepConfigError(f"hydra.sweeper.storage: {error}") from None
        options = (
            ("sampler", self.sampler_config, optuna.samplers.BaseSampler, "TPESampler"),
            ("pruner", self.pruner_config, optuna.pruners.BasePruner, "MedianPruner"),
        )
        for name, config, base, example in options:
            if config is None:
                if name == "sampler":
                    raise SweepConfigError(
                        "hydra.sweeper.sampler is null: name an Optuna sampler, e.g. "
                        "{_target_: optuna.samplers.TPESampler}"
                    )
                continue
            where = f"hydra.sweeper.{name}"
            target = config.get("_target_") if isinstance(config, DictConfig | dict) else None
            try:
                built = instantiate(config)
            except Exception as error:
                cause = error.__cause__ or error
                reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
                raise SweepConfigError(
                    f"{where} ({target}) cannot be built: {reason}; name a class of "
                    f"optuna.{name}s with its arguments, e.g. _target_: optuna.{name}s.{example}"
                ) from None
            if not isinstance(built, base):
                raise SweepConfigError(
                    f"{where}: {target} is not an Optuna {name}; name a class of optuna.{name}s, "
                    f"e.g. optuna.{name}s.{example}"
                )
            setattr(self, name, built)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        with _one_line_errors():
            self.check()
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # The sweep ---------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        with _one_line_errors():
            try:
                return self._sweep(arguments)
            except RunInterrupted as error:  # the exit status of an interrupted run
                print(f"{Path(sys.argv[0]).name}: {error}", file=sys.stderr)
                sys.exit(143)

    def _sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        import optuna

        from zoo.sweeps import displayed_url, open_storage, write_study_report

        space, fixed = self._search_space(arguments)
        self._check_composes(space, fixed)
        heartbeat = {"heartbeat_interval": self.heartbeat_interval}
        if self.heartbeat_interval:
            heartbeat["grace_period"] = self.grace_period or 2 * self.heartbeat_interval
        try:
            storage = open_storage(self.storage_url, **heartbeat)
        except ZooError as error:
            raise SweepConfigError(f"hydra.sweeper.storage: {error}") from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self._check_trial_folders(storage, sweep_dir)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        stored = study.direction.name.lower()
        if stored != self.direction:  # Optuna would keep the stored one without a word
            raise SweepConfigError(
                f"study {self.study_name} in {displayed_url(self.storage_url)} is set to "
                f"{stored}, and hydra.sweeper.direction={self.direction} cannot change that: "
                f"pass hydra.sweeper.direction={stored}, or a new hydra.sweeper.study_name"
            )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(
            "study %s in %s: %d of %d trials done; searching %s",
            self.study_name,
            displayed_url(self.storage_url),
            len(self._counted_trials(study)),
            self.n_trials,
            ", ".join(space) or "nothing",
        )

        returns: list[Sequence[JobReturn]] = []
        job_index = 0
        while trials := self._ask(study, storage, space):
            searched = {
                trial.number: [p.override(trial.params[p.key]) for p in space.values()]
                for trial in trials
            }
            # Each trial's folder is named by its number (not by the job's index, which
            # starts again at 0 when a sweep is resumed), so a trial never finds another
            # trial's checkpoints there and resumes them (resume=auto).
            batch = [
                [
                    *fixed,
                    *searched[trial.number],
                    f"hydra.sweep.subdir={trial.number}",
                    f"++optuna.trial_number={trial.number}",
                ]
                for trial in trials
            ]
            first_job, job_index = job_index, job_index + len(trials)
            try:
                self.validate_batch_is_legal(batch)
                for trial in trials:
                    run_dir = self._claim_trial_folder(sweep_dir, trial)
                    trial.set_user_attr("run_dir", str(run_dir))
            except Exception as error:  # an override the config cannot take: a mistake, stop
                for trial in trials:
                    self._tell_failure(study, trial, f"the trial cannot start: {error}")
                raise
            try:
                with self._heartbeat(storage, study, trials):
                    results = self.launcher.launch(batch, initial_job_idx=first_job)
            except Exception as error:  # the launcher itself failed: the trials did not run
                log.error("trials %s could not run", [t.number for t in trials], exc_info=True)
                for trial in trials:
                    self._tell_failure(study, trial, f"launch failed: {error!r}")
                continue
            except BaseException:  # Ctrl-C: the study must not keep these trials running
                for trial in trials:
                    self._tell_failure(study, trial, "the sweep was interrupted")
                raise
            interrupted = []
            for trial, result in zip(trials, results, strict=True):
                if self._interrupted(result):
                    interrupted.append(trial.number)
                    self._hand_back(storage, study, trial, searched[trial.number])
                else:
                    self._tell(study, trial, searched[trial.number], result)
            returns.append(results)
            if interrupted:  # SIGTERM (preemption, kill): stop here, as a single run does
                write_study_report(study, sweep_dir, self._about())
                raise RunInterrupted(
                    f"the sweep was interrupted by SIGTERM during trial(s) "
                    f"{', '.join(map(str, interrupted))}; they keep their numbers, parameters "
                    f"and checkpoints: run the same command again to resume them and go on"
                )

        written = write_study_report(study, sweep_dir, self._about())
        log.info("study report: %s", "  ".join(str(path) for path in written.values()))
        return returns

    def _about(self) -> dict[str, Any]:
        """Return what the study report says about the sweep itself."""
        from zoo.sweeps import displayed_url

        return {
            "study_name": self.study_name,
            "storage": displayed_url(self.storage_url),
            "direction": self.direction,
            "metric": str(self.config.get("monitor", "objective")),
            "n_trials": self.n_trials,
        }

    @staticmethod
    def _interrupted(result: JobReturn) -> bool:
        """Return whether the job was stopped by SIGTERM (it raised RunInterrupted)."""
        return result.status == JobStatus.FAILED and isinstance(
            result._return_value, RunInterrupted
        )

    def _hand_back(
        self, storage: Any, study: optuna.Study, trial: Any, overrides: list[str]
    ) -> None:
        """Return an interrupted trial to WAITING, the state of a queued trial: the next
        sweep asks for it first and gets the same number, parameters and run folder, where
        the run resumes from its interrupted.ckpt (resume=auto). It is not a failure: the
        study would otherwise count it and never finish it."""
        trial.set_user_attr("overrides", overrides)
        _return_to_queue(storage, study, trial)
        log.warning("trial %d interrupted by SIGTERM: it resumes in the next sweep", trial.number)

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, Parameter], list[str]]:
        """Return the searched parameters and the fixed overrides every trial gets.

        The space comes from ``hydra.sweeper.params`` and from sweep overrides on the
        command line, which win; plain overrides (``debug=smoke``) are passed as they are.
        """
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        from_config = []
        for key, value in self.params.items():
            try:
                from_config += parser.parse_overrides([f"{key}={value}"])
            except OverrideParseException as error:  # Hydra's message: 3 lines and a link
                reason = str(error).splitlines()[1 if len(str(error).splitlines()) > 1 else 0]
                raise SweepConfigError(
                    f"hydra.sweeper.params: {key}={value} cannot be parsed ({reason}); "
                    f"write {SYNTAX}"
                ) from None
        from_command_line = parser.parse_overrides(arguments)
        space: dict[str, Parameter] = {}
        fixed: dict[str, str] = {}
        for override in [*from_config, *from_command_line]:
            key = override.get_key_element()
            space.pop(key, None)
            fixed.pop(key, None)
            if override.is_sweep_override():
                space[key] = parameter(override)
            else:
                fixed[key] = override.input_line or f"{key}={override.get_value_element_as_str()}"
        return space, list(fixed.values())

    def _check_composes(self, space: dict[str, Parameter], fixed: list[str]) -> None:
        """Compose the config of one point of the space (the first choice, the low ends), so
        that a key the config lacks is found before the study records any trial."""
        point = []
        for searched in space.values():
            distribution = searched.distribution
            low = getattr(distribution, "low", None)
            point.append(searched.override(distribution.choices[0] if low is None else low))
        try:
            self.validate_batch_is_legal([[*fixed, *point, "++optuna.trial_number=0"]])
        except ConfigCompositionException as error:  # Hydra's message: several lines
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise SweepConfigError(
                f"the sweep's overrides do not compose: {' '.join(lines[:3])}"
            ) from None

    def _check_trial_folders(self, storage: Any, sweep_dir: Path) -> None:
        """Raise SweepConfigError when a folder of ``sweep_dir`` named by a trial number holds
        files that are not that trial's of this study (another study's, an older sweep's).
        Runs before the study is created, so that a refused sweep leaves none behind."""
        if not sweep_dir.is_dir():
            return
        try:
            study_id = storage.get_study_id_from_name(self.study_name)
            stored = storage.get_all_trials(study_id, deepcopy=False)
        except KeyError:  # a new study: every folder with files in it is someone else's
            stored = []
        trials = {trial.number: trial for trial in stored}
        for folder in sorted(sweep_dir.iterdir()):
            if not (folder.name.isdigit() and folder.is_dir() and any(folder.iterdir())):
                continue
            trial = trials.get(int(folder.name))
            owner = trial.user_attrs.get("run_dir") if trial is not None else None
            if owner is None or Path(owner).resolve() != folder.resolve():
                raise SweepConfigError(
                    f"{folder} holds a run that is not trial {folder.name} of study "
                    f"{self.study_name}, and trial {folder.name} would resume it: pass a new "
                    f"hydra.sweep.dir (or move {sweep_dir} away)"
                )

    def _claim_trial_folder(self, sweep_dir: Path, trial: Any) -> Path:
        """Return ``trial``'s run folder; raise SweepConfigError if it already holds files
        that are not this trial's: a new trial starts in an empty folder, or it would resume
        what it finds. A trial interrupted before (handed back, its folder recorded) resumes
        its own run there."""
        number = trial.number
        folder = (sweep_dir / str(number)).absolute()
        owner = trial.user_attrs.get("run_dir")
        if owner is not None and Path(owner).resolve() == folder.resolve():
            return folder
        if folder.is_dir() and any(folder.iterdir()):
            raise SweepConfigError(
                f"{folder} already holds a run, not trial {number}'s: pass a new "
                f"hydra.sweep.dir (or move {sweep_dir} away)"
            )
        return folder

    def _counted_trials(self, study: optuna.Study) -> list:
        """Return the trials that count toward ``n_trials``: all but those waiting to start."""
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
        return study.get_trials(deepcopy=False, states=counted)

    def _ask(self, study: optuna.Study, storage: Any, space: dict[str, Parameter]) -> list:
        """Return the next trials to run (at most ``n_jobs``); none once the study is full.

        Another worker may take the last free trial numbers between the count and the
        ask: a trial numbered ``n_trials`` or above is handed back (WAITING, the state
        Optuna gives queued trials; the next ask anywhere takes it), so the study never
        grows past ``n_trials`` finished trials.
        """
        import optuna

        if self.space_covered:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # RUNNING trials of dead workers -> FAIL
        room = self.n_trials - len(self._counted_trials(study))
        distributions = {key: p.distribution for key, p in space.items()}
        trials = []
        for _ in range(min(room, self.n_jobs)):
            with warnings.catch_warnings():  # heartbeats are ours to send, not optimize()'s
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask(distributions)
            if trial.number >= self.n_trials:
                _return_to_queue(storage, study, trial)
                break
            trials.append(trial)
        return trials

    @contextmanager
    def _heartbeat(self, storage: Any, study: optuna.Study, trials: list) -> Iterator[None]:
        """Records the trials' heartbeats while their jobs run, so that other workers can tell
        a live trial from one whose worker died."""
        if not self.heartbeat_interval:
            yield
            return
        study_id = storage.get_study_id_from_name(study.study_name)
        trial_ids = [
            storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials
        ]
        stop = threading.Event()

        def beat() -> None:
            while True:
                for trial_id in trial_ids:
                    storage.record_heartbeat(trial_id)
                if stop.wait(self.heartbeat_interval):
                    return

        thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # Telling the study how a trial ended --------------------------------------------------

    def _tell(
        self, study: optuna.Study, trial: Any, overrides: list[str], result: JobReturn
    ) -> None:
        import optuna
        from optuna.trial import TrialState

        trial.set_user_attr("overrides", overrides)
        if result.hydra_cfg is not None:
            trial.set_user_attr("run_dir", str(result.hydra_cfg.hydra.runtime.output_dir))
        if result.status == JobStatus.FAILED:
            error = result._return_value  # what the job raised (return_value would re-raise it)
            if isinstance(error, optuna.TrialPruned):
                self._finish(study, trial, state=TrialState.PRUNED)
                log.info("trial %d pruned (%s): %s", trial.number, error, " ".join(overrides))
            else:
                self._tell_failure(study, trial, f"{type(error).__name__}: {error}", error)
            return
        value = result.return_value
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            self._tell_failure(study, trial, f"the job returned {value!r}, not a finite number")
            return
        self._finish(study, trial, values=float(value))
        best = study.best_trial
        log.info(
            "trial %d: %s=%.6g (best %.6g, trial %d): %s",
            trial.number,
            self.config.get("monitor", "value"),
            value,
            best.value,
            best.number,
            " ".join(overrides),
        )

    def _finish(self, study: optuna.Study, trial: Any, **outcome: Any) -> None:
        """Tells the study how the trial ended. Samplers that cover a finite space (GridSampler,
        BruteForceSampler) call study.stop() once it is covered, which Optuna allows only
        inside optimize(): the trial is recorded all the same, and the sweep ends."""
        try:
            study.tell(trial, **outcome)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise
            self.space_covered = True

    def _tell_failure(
        self, study: optuna.Study, trial: Any, reason: str, error: BaseException | None = None
    ) -> None:
        """Records the trial as FAIL with its reason (user attribute ``failure``)."""
        from optuna.trial import TrialState

        trial.set_user_attr("failure", reason[:2000])
        self._finish(study, trial, state=TrialState.FAIL)
        log.warning(
            "trial %d failed, the study goes on: %s",
            trial.number,
            reason,
            exc_info=error if error is not None and not _is_user_error(error) else None,
        )


def _return_to_queue(storage: Any, study: optuna.Study, trial: Any) -> None:
    """Set a RUNNING ``trial`` back to WAITING, the state of a queued trial: the next ask
    anywhere takes it, with its number and parameters."""
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_state_values(trial_id, TrialState.WAITING)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Ends the program with the message of a SweepConfigError raised inside, prefixed with
    the script's name, as zoo's entry scripts print a ZooError (Hydra would add a line
    about HYDRA_FULL_ERROR)."""
    try:
        yield
    except SweepConfigError as error:
        sys.exit(f"{Path(sys.argv[0]).name}: {error}")


def _is_user_error(error: BaseException) -> bool:
    """Return whether ``error`` is a mistake the message alone explains (a zoo ZooError)."""
    return isinstance(error, ZooError)
