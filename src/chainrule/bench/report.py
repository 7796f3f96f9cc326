"""The benchmark's reports: its results as text tables or Markdown."""

from __future__ import annotations


from .workloads import FLOOR


def load_warning(env: dict) -> str | None:
    """A warning when other processes kept the CPUs busy (load average above half the CPUs)."""
    loads = [x for key in ("loadavg_start", "loadavg_end") for x in (env.get(key) or [])[:1]]
    cpus = env.get("cpu_count") or 1
    if not loads or max(loads) <= 0.5 * cpus:
        return None
    advice = " (consider --threads 1)" if (env.get("threads") or 1) > 1 else ""
    return (
        f"the load average was {max(loads):.1f} on {cpus} CPUs: other processes were running, so the "
        f"timings are slower and noisier than on a quiet machine{advice}; "
        "multi-threaded BLAS and PyTorch suffer most"
    )


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _mib(mem: dict | None) -> str:
    if not mem:
        return "-"
    if "error" in mem:
        return "error"
    return f"{mem['increase_bytes'] / 2**20:.1f}"


def _table(header: list, rows: list, markdown: bool) -> list:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header)] + [fmt(r) for r in rows]


def format_report(result: dict, markdown: bool = False) -> str:
    """The results as text tables (or Markdown tables): medians with min-max, ratios, memory, targets."""
    lines = []
    env = result["environment"]
    gpu = env.get("gpu") if result["settings"].get("device", "cpu") == "cuda" else None
    floor = FLOOR["cuda" if gpu else "cpu"]
    if not markdown:
        where = (f"{gpu['name']} (CuPy {gpu['cupy']}, CUDA {gpu['cuda_runtime']}) and {env['cpu']}" if gpu
                 else f"{env['cpu']} ({env['cpu_count']} CPUs, {env['threads']} threads)")
        lines.append(
            f"chainrule bench on {where}, "
            f"{result['settings']['repeats']} repetitions{' (quick)' if result['settings']['quick'] else ''}"
        )
    warning = None if gpu else load_warning(env)
    if warning:
        lines += ["", f"**{warning}**" if markdown else f"warning: {warning}"]
    for row in result["training"]:
        head = f"{row['workload']}: {row['description']}, {row['steps_per_run']} steps per run"
        lines += ["", f"### {head}", ""] if markdown else ["", head]
        table = []
        for name, r in row["runners"].items():
            s = r["seconds_per_step"]
            cells = [name, _time(s["median"]), f"{_time(s['min'])} - {_time(s['max'])}", _x(r["vs_torch"]), _x(r.get(f"vs_{floor}"))]
            if gpu:  # what the card does: rows and estimated TFLOP per second (6 x parameters per row)
                cells += [f"{r['samples_per_second']:,.0f}", f"{r['tflops']:.2f}"]
            table.append(cells + [f"{r['final_loss']:.4f}", _mib(r.get("memory"))])
        header = ["runner", "per step", "min - max", "vs torch", f"vs {floor}"]
        header += ["samples/s", "TFLOP/s"] if gpu else []
        lines += _table(header + ["final loss", "peak MiB"], table, markdown)
    for row in result["inference"]:
        head = f"inference, {row['workload']}: {row['description']}"
        lines += ["", f"### {head}", ""] if markdown else ["", head]
        table = []
        for name, r in row["runners"].items():
            s = r["samples_per_second"]
            table.append([
                name, f"{s['median']:,.0f}", f"{s['min']:,.0f} - {s['max']:,.0f}", _time(r["seconds_per_sample"]["median"]),
                _x(r["vs_torch"]), _x(r.get(f"vs_{floor}")),
            ])
        lines += _table(["runner", "samples/s", "min - max", "per sample", "time vs torch", f"time vs {floor}"], table, markdown)
    if result.get("targets"):
        lines += ["", "### Targets (chainrule, median ratios)" if markdown else "targets (chainrule, median ratios)"]
        if markdown:
            lines.append("")
        table = []
        for t in result["targets"]:
            status = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
            limit = f"{'>=' if t.get('at_least') else '<='} {t['limit']}"
            table.append([t["target"], limit, "-" if t["ratio"] is None else f"{t['ratio']:.3f}x", status])
        lines += _table(["target", "limit", "measured", ""], table, markdown)
    for name, why in result.get("skipped", {}).items():
        lines.append(f"{'- ' if markdown else ''}skipped {name}: {why}")
    if not markdown and gpu:
        lines.append("")
        lines.append("per step: median over epochs of all repetitions, the GPU synchronized before each clock reading; ratios")
        lines.append("are of medians (lower is better); TFLOP/s = 6 x parameters x samples/s; peak MiB: peak GPU memory in")
        lines.append("use while building the model, moving the data and training one epoch (CuPy's pool, or")
        lines.append("torch.cuda.max_memory_allocated), over what was in use before.")
    elif not markdown:
        lines.append("")
        lines.append("per step: median over epochs of all repetitions (sklearn: over fits); ratios are of medians (lower is")
        lines.append("better); peak MiB: peak resident-memory increase over the process before the model was built, one")
        lines.append("epoch in a fresh subprocess.")
    return "\n".join(lines)


def results_markdown(result: dict, title: str = "chainrule bench") -> str:
    """A results file in Markdown: the machine, the versions, the thread settings and the tables."""
    env = result["environment"]
    blas = [p for p in (env.get("threadpools") or []) if p.get("user_api") == "blas"]
    gpu = env.get("gpu") if result["settings"].get("device", "cpu") == "cuda" else None
    lines = [
        f"# {title}: {env['date']}",
        "",
        "Command: `chainrule bench" + (" --device cuda" if gpu else "") + (" --quick" if result["settings"]["quick"] else "")
        + (f" --repeats {result['settings']['repeats']}" if result["settings"]["repeats"] != 5 else "")
        + (f" --threads {result['settings']['threads']}" if result["settings"].get("threads") else "") + "`",
        "",
        "## Machine and versions",
        "",
        *([f"- GPU: {gpu['name']} (compute capability {gpu['compute_capability']}, {gpu['memory_bytes'] / 2**30:.0f} GiB, "
           f"{gpu['multiprocessors']} multiprocessors); CUDA runtime {gpu['cuda_runtime']}, driver {gpu['cuda_driver']}; "
           f"CuPy {gpu['cupy']}; PyTorch CUDA {gpu.get('torch_cuda', '-')}; float32 products: CUPY_TF32 {gpu['CUPY_TF32']}, "
           f"torch float32 matmul precision {gpu.get('torch_float32_matmul_precision', '-')}"] if gpu else []),
        f"- CPU: {env['cpu']}, {env['cpu_count']} logical CPUs; {env['platform']}",
        f"- Python {env['python']}, NumPy {env['numpy']}, chainrule {env['chainrule']}, "
        f"PyTorch {env.get('torch', 'not installed')}, scikit-learn {env.get('sklearn', 'not installed')}",
        "- BLAS: " + ("; ".join(
            f"{p['internal_api']} {p['version']} ({p['prefix']}, kernel {p.get('architecture')}, {p['num_threads']} threads)"
            for p in blas) or "unknown"),
        f"- Threads: {env['threads']} for NumPy's BLAS and for PyTorch (torch.set_num_threads)",
        "- PyTorch: " + ("; ".join(env.get("torch_parallel") or []) or "not loaded"),
        "- Environment variables: " + (", ".join(f"{k}={v}" for k, v in env["variables"].items()) or
                                        "no OPENBLAS_*, OMP_*, MKL_* or GOTO* variable set"),
        f"- Load average (1, 5, 15 min) at start: {env.get('loadavg_start')}, at end: {env.get('loadavg_end')}",
        "",
        "## Results",
        "",
        "Per step: median over the epochs of all repetitions (scikit-learn: over its fits), with min - max;",
        "ratios are ratios of medians (lower is better).",
        *(["TFLOP/s: 6 x parameters x samples per second (a forward and two backward products per weight).",
           "Peak MiB: peak GPU memory in use while building the model, moving the data and training one epoch",
           "(CuPy's memory pool, or torch.cuda.max_memory_allocated), over what was in use before."] if gpu else
          ["Peak MiB: peak resident-memory increase over the process just before the model was built,",
           "one epoch of training in a fresh subprocess (see benchmarks/README.md)."]),
        "",
        format_report(result, markdown=True).strip(),
        "",
    ]
    return "\n".join(lines)
