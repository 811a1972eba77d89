"""The ``hybridpot`` command line.

Usage::

    hybridpot train config.yaml [--resume] [--no-progress] [--output DIR] [--ddp]
    torchrun --nproc_per_node=2 -m hybridpot.cli train config.yaml --ddp   (data parallel)
    hybridpot evaluate model.pt data.xyz [--format F] [--units U] [--keys energy=E,forces=F] [--output DIR]
    hybridpot convert n2p2_directory model.pt [--units ase|file] [--file-units bohr_hartree|angstrom_ev]
    hybridpot ipi model.pt structure.xyz --address NAME [--inet] [--port P] [--charge Q]   (i-PI client)
    hybridpot export model.pt exported.pt [--example structure.xyz]   (metatomic AtomisticModel)

Adding a subcommand (e.g. ``convert`` or ``demo``) takes one small function pair and one
``register`` call in this module (or any module imported here)::

    def _configure_demo(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steps", type=int, default=100)

    def _run_demo(args: argparse.Namespace) -> int:
        ...
        return 0            # exit status

    register("demo", "run a short demonstration", _configure_demo, _run_demo)

``run`` functions may raise ``ValueError``/``FileNotFoundError`` for bad input: ``main``
prints ``hybridpot <command>: error: <message>`` and returns exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["main", "register", "build_parser"]

#: name -> (help, configure(parser), run(args) -> int)
COMMANDS: Dict[str, Tuple[str, Callable, Callable]] = {}


def register(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int]) -> None:
    """Add a subcommand ``hybridpot <name>``."""
    if name in COMMANDS:
        raise ValueError(f"subcommand {name!r} is already registered")
    COMMANDS[name] = (help, configure, run)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hybridpot", description="Machine-learned interatomic potentials with long-range physics.")
    parser.add_argument("--version", action="version", version=f"hybridpot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name, (help_, configure, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        configure(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``hybridpot`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    from .training.trainer import TrainingInterrupted

    try:
        return int(args._run(args) or 0)
    except TrainingInterrupted as err:
        print(f"hybridpot {args.command}: stopped ({err}); resume with --resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"hybridpot {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hybridpot {args.command}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------- helpers
def _parse_keys(text: Optional[str]) -> dict:
    """``"energy=REF_energy,forces=REF_forces"`` -> dict."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"--keys expects name=key pairs separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _print_metrics(title: str, acc) -> None:
    print(f"\n{title}")
    print(acc.table())


# ---------------------------------------------------------------------------------- train
def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML configuration (see examples/train_config.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint.pt")
    p.add_argument("--output", default=None, help="run directory (overrides output.directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (overrides training.device)")
    p.add_argument("--ddp", action="store_true",
                   help="data-parallel training (DistributedDataParallel) under torchrun; training.batch_size is the "
                        "global batch; gloo on CPU, nccl on CUDA; rank 0 writes the run directory")


def _run_train(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    import yaml

    from .io import read_structures
    from .training.builder import build_model
    from .training.config import load_config
    from .training.dataset import AtomsDataset
    from .training.trainer import Trainer, evaluate_model

    rank = 0
    if getattr(args, "ddp", False):
        from .training.distributed import init_from_env

        rank, _ = init_from_env()
    cfg = load_config(args.config)
    d, t = cfg.data, cfg.training
    if getattr(args, "device", None):
        from .training.devices import resolve_device

        resolve_device(args.device)  # a clear error before any data are read
        t.device = args.device
    if not d.train:
        raise ValueError(f"{args.config}: data.train is required (a file of reference structures)")
    for key in ("train", "validation", "test"):
        value = getattr(d, key)
        if value and not cfg.resolve(value).is_file():
            raise FileNotFoundError(f"{args.config}: data.{key} = {value!r}: no such file ({cfg.resolve(value)}; "
                                    "relative paths are relative to the config file)")
    if cfg.model.from_file and not cfg.resolve(cfg.model.from_file).is_file():
        raise FileNotFoundError(f"{args.config}: model.from_file = {cfg.model.from_file!r}: no such file "
                                f"({cfg.resolve(cfg.model.from_file)})")
    run_dir = Path(args.output) if args.output else cfg.resolve(cfg.output.directory)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run directory {run_dir} exists and is not a directory: choose another output.directory "
                         "or --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.resume and not (run_dir / "checkpoint.pt").exists():
        raise FileNotFoundError(f"{run_dir / 'checkpoint.pt'}: nothing to resume")
    if rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.to_dict().items() if k != "base_dir"},
                                                             sort_keys=False))
    read = lambda path: read_structures(cfg.resolve(path), format=d.format, keys=d.keys, units=d.units)
    images = {"train": read(d.train)}
    for name in ("validation", "test"):
        if getattr(d, name):
            images[name] = read(getattr(d, name))
    elements = sorted({int(z) for imgs in images.values() for a in imgs for z in a.get_atomic_numbers()})

    torch.manual_seed(t.seed)
    np.random.seed(t.seed)
    model = build_model(cfg.model, elements, cfg.base_dir)
    cutoff = model.cutoff
    sets = {k: AtomsDataset.from_atoms(v, cutoff, charges_as_input=d.charges_as_input) for k, v in images.items()}
    train = sets["train"]
    if "validation" not in sets:
        fr = list(d.split)
        if "test" in sets:
            fr = fr[:2]
        parts = train.split(fr, seed=d.seed)
        train, sets["validation"] = parts[0], parts[1]
        if "test" not in sets:
            sets["test"] = parts[2]
    sets["train"] = train
    print(f"hybridpot train: {cfg.model.kind} model, {sum(p.numel() for p in model.parameters())} parameters, "
          f"elements {elements}, cutoff {cutoff:.3g} Å; structures: "
          + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    trainer = Trainer(model, train, sets["validation"], t, directory=run_dir,
                      scaling=cfg.model.scaling if cfg.model.from_file is None else None,
                      scaling_range=cfg.model.scaling_range, progress=cfg.output.progress and not args.no_progress,
                      ddp=getattr(args, "ddp", False))
    final = trainer.fit(resume=args.resume)
    if getattr(args, "ddp", False):
        from .training.distributed import shutdown

        shutdown()
    if rank != 0:
        return 0
    summary = {}
    for name, ds in sets.items():
        if len(ds) == 0:
            continue
        acc = evaluate_model(final, ds, batch_size=t.batch_size, device=t.device)
        summary[name] = acc.compute()
        _print_metrics(f"{name} ({len(ds)} structures), float64:", acc)
    (run_dir / "final_metrics.json").write_text(json.dumps(summary, indent=1))
    print(f"\nmodel written to {run_dir / 'model.pt'}; metrics log {run_dir / 'metrics.jsonl'}")
    return 0


register("train", "train a model from a YAML config", _configure_train, _run_train)


# ---------------------------------------------------------------------------------- evaluate
def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file written by hybridpot.save / hybridpot train")
    p.add_argument("data", help="reference structures (extended XYZ or n2p2 input.data)")
    p.add_argument("--format", default=None, help="extxyz or input.data (default: from the file name)")
    p.add_argument("--units", default="angstrom_ev", help="units of an input.data file: angstrom_ev or bohr_hartree")
    p.add_argument("--keys", default=None, help="key names in the xyz file, e.g. energy=REF_energy,forces=REF_forces")
    p.add_argument("--output", default=".", help="directory for parity plots and metrics.json (default: .)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_evaluate(args: argparse.Namespace) -> int:
    from .model import load
    from .training.dataset import AtomsDataset
    from .training.losses import UNITS
    from .training.plots import parity_plot
    from .training.trainer import evaluate_model

    model_path = Path(args.model)
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: no such model file")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out}: exists and is not a directory (metrics.json and the parity plots are "
                         "written into a directory): give a directory name")
    if not Path(args.data).exists():
        raise FileNotFoundError(f"{args.data}: no such data file")
    model = load(model_path)
    ds = AtomsDataset.from_file(args.data, model.cutoff, format=args.format, keys=_parse_keys(args.keys), units=args.units)
    for what in ds.constant_labels():
        print(f"hybridpot evaluate: warning: {args.data}: reference {what} in all {len(ds)} structures: "
              "probably not reference labels (a file without results, or the wrong --keys); the errors below "
              "are then meaningless", file=sys.stderr)
    acc = evaluate_model(model, ds, batch_size=args.batch_size, keep_values=True, progress=not args.no_progress,
                         device=args.device)
    _print_metrics(f"{args.data}: {len(ds)} structures, {ds.n_atoms} atoms (float64)", acc)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(acc.compute(), indent=1))
    if not args.no_plots:
        titles = {"energy": "energy per atom", "forces": "force components", "charges": "atomic charges",
                  "dipole": "dipole components", "stress": "stress components"}
        for name, (ref, pred) in acc.parity_data().items():
            path = parity_plot(ref, pred, titles[name], UNITS[name], out / f"parity_{name}.png")
            print(f"wrote {path}")
    return 0


register("evaluate", "RMSE/MAE table and parity plots of a model on reference data", _configure_evaluate, _run_evaluate)

from .demo import configure_parser as _configure_demo, run_from_args as _run_demo  # noqa: E402

register("demo", "train 2G and 4G models on NaCl clusters and compare them (plots, MD)", _configure_demo, _run_demo)



def _configure_convert(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="n2p2 potential directory (input.nn, scaling.data, weights.ZZZ.data, ...)")
    parser.add_argument("output", help="hybridpot model file to write (e.g. model.pt)")
    parser.add_argument("--units", choices=["ase", "file"], default="ase",
                        help="ase: Å/eV model for ASE (default); file: keep the potential's own units")
    parser.add_argument("--file-units", choices=["bohr_hartree", "angstrom_ev"], default="bohr_hartree",
                        help="units the n2p2 potential was trained in (default bohr_hartree, as the n2p2 examples)")
    parser.add_argument("--set", action="append", default=[], metavar="KEYWORD=VALUE",
                        help="override an input.nn keyword, e.g. --set 'global_nodes_short=10 10'")


def _run_convert(args: argparse.Namespace) -> int:
    from .io.n2p2 import from_n2p2
    from .model import save

    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects KEYWORD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    model = from_n2p2(args.directory, units=args.units, file_units=args.file_units, overrides=overrides or None)
    save(model, args.output)
    kind = "4G" if model.charges is not None else "2G"
    print(f"converted {kind} n2p2 potential {args.directory} -> {args.output} "
          f"(elements {model.elements}, cutoff {model.cutoff:.4g} {'Å' if args.units == 'ase' else 'file length units'})")
    return 0


register("convert", "convert an n2p2 potential directory into a hybridpot model file", _configure_convert, _run_convert)


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="hybridpot model file (hybridpot.save)")
    parser.add_argument("output", help="metatomic model file to write (e.g. exported.pt)")
    parser.add_argument("--example", default=None,
                        help="structure file (any ase.io format) with every element of the model to trace the local "
                             "pieces on (default: a generated periodic structure)")


def _run_export(args: argparse.Namespace) -> int:
    from .metatomic import HAVE_METATOMIC, METATOMIC_MISSING, export_metatomic
    from .model import load

    if not HAVE_METATOMIC:
        raise ValueError(METATOMIC_MISSING)
    if not Path(args.model).is_file():
        raise FileNotFoundError(f"{args.model}: no such model file")
    example = None
    if args.example is not None:
        import ase.io

        example = ase.io.read(args.example)
    model = load(args.model)
    path = export_metatomic(model, args.output, example=example)
    print(f"exported {args.model} ({', '.join(model.term_names)}) -> {path} as a metatomic AtomisticModel "
          f"(checked against the eager model; load with metatomic_ase.MetatomicCalculator({str(path)!r}))")
    return 0


register("export", "export a model whole (QEq, electrostatics, ...) as a metatomic AtomisticModel for MD engines",
         _configure_export, _run_export)

from .ipi import _configure as _configure_ipi, _run as _run_ipi  # noqa: E402

register("ipi", "serve a model to a running i-PI server (socket client, examples/ipi/)", _configure_ipi, _run_ipi)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
