"""``nas serve``: the HTTP API on Ray Serve."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from nas._cli_utils import DbOpt, console, err_console, storage_option

__all__ = ["register"]


def serve_cmd(
    host: Annotated[str, typer.Option(
        "--host", help="Address to bind. Anything but loopback requires a bearer token: "
        "$NAS_API_TOKEN, or one generated and printed once.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535,
                                      help="TCP port of the API.")] = 8000,
    db: DbOpt = None,
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", help="The service's own files: the searches' study database and the "
        "exports (files are only served from its exports/ folder).")] = Path("runs/serve"),
    storage: Annotated[str | None, storage_option("SQLite in --state-dir")] = None,
    allow_root: Annotated[list[Path] | None, typer.Option(
        "--allow-root", help="A folder that submitted search configs may name files in: "
        "checkpoint, data, a proxy's path= (repeatable); a path outside these once symlinks "
        "are resolved is refused.")] = None,
    max_archs: Annotated[int, typer.Option(
        "--max-archs", min=1, max=100_000, help="Most architectures per predict request.")] = 1000,
    max_body: Annotated[int, typer.Option(
        "--max-body-bytes", min=1024, help="Largest request body accepted.")] = 1 << 20,
    ingress: Annotated[str, typer.Option(
        "--ingress", help="direct: Ray Serve's throughput-optimised direct ingress (the "
        "replica serves HTTP itself); proxy: through Serve's HTTP proxy actor.")] = "direct",
    num_cpus: Annotated[int | None, typer.Option(
        "--num-cpus", min=1, help="CPUs of the local Ray instance (default: all).")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) until Ctrl-C.

    Routes: GET /health, /devices, /spaces; POST /latency/predict; POST /searches,
    GET|DELETE /searches/{id}, GET /searches/{id}/report; POST /exports,
    GET /exports/{id}/{file}. Starts a local Ray instance.
    """
    from nas.serve import ServiceSettings, check_port_free, resolve_token, start
    from nas.serve._settings import check_files

    token, generated = resolve_token(host)
    settings = ServiceSettings(
        host=host, port=port, db=db, token=token, state_dir=str(state_dir), storage=storage,
        allowed_roots=tuple(str(p) for p in (allow_root or [])), max_archs=max_archs,
        max_body_bytes=max_body, ingress=ingress,
    )
    # at once, not after a minute of starting Ray: the port, then the files
    check_port_free(host, port)
    check_files(settings)
    err_console.print("[dim]starting Ray and Ray Serve...[/dim]")
    svc = start(settings, num_cpus=num_cpus)
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    # soft_wrap: a URL or token broken over two lines cannot be copied
    console.print(f"nas service on {base}  (docs: {base}/docs; Ctrl-C stops it)",
                  soft_wrap=True)
    if generated:
        console.print("API token (shown once; send `Authorization: Bearer <token>`):",
                      soft_wrap=True)
        console.print(token, soft_wrap=True, markup=False)
    elif token:
        console.print("API token: from $NAS_API_TOKEN", soft_wrap=True)
    else:
        console.print("no API token: bound to loopback only", soft_wrap=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        err_console.print("[dim]stopping...[/dim]")
        svc.stop()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the root app."""
    app.command("serve")(serve_cmd)
