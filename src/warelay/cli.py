"""The ``warelay`` command line: serve, work, try it out, and administer numbers, keys and knowledge.

Every command reads settings from the environment (``WARELAY_*``, ``.env``, ``WARELAY_CONFIG``)
and fails with a readable message, not a traceback, when they are unsafe or incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column, Table
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.config import Settings, load_settings
from warelay.crypto import SecretBox, new_api_key, new_secret_key
from warelay.errors import ConfigError
from warelay.observability import configure_logging
from warelay.storage.db import create_engine, upgrade

T = TypeVar("T")

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="warelay",
    help="Self-hosted gateway that puts AI agents on WhatsApp Business numbers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
knowledge_app = typer.Typer(help="Knowledge files the agents answer from.", no_args_is_help=True)
numbers_app = typer.Typer(help="WhatsApp business numbers.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; shown once).", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Tenants: each owns its numbers, agents, keys and knowledge.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(numbers_app, name="numbers")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")

DEMO_DIR = Path(".warelay")
SCOPES = ("admin", "messages:send", "conversations:read", "conversations:write")


def _table(*headers: str) -> Table:
    """A listing whose cells wrap instead of being cut off (ids and keys must stay whole)."""
    return Table(*(Column(h, overflow="fold") for h in headers))


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ConfigError as exc:
        console.print(f"[red]warelay: {exc}[/red]")
        sys.exit(2)


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**overrides)
    configure_logging(settings.log_level, json_output=settings.log_json)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@contextlib.contextmanager
def _fail_cleanly() -> Iterator[None]:
    try:
        yield
    except (LookupError, ValueError) as exc:
        console.print(f"[red]warelay: {exc}[/red]")
        raise typer.Exit(1) from None


async def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await upgrade(engine)
        return await work(engine)
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------ serving


def tune_gc() -> None:
    """Garbage-collector settings for a long-running server process.

    Everything imported and built at start-up lives as long as the process: frozen, the collector
    stops re-scanning it on every full collection. The message path allocates many short-lived
    objects; with CPython's default first threshold (700) the collector ran about every
    millisecond under load and took ~8 % of the CPU (py-spy, gateway benchmark).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


WORKER_GRACE = 30.0  # seconds a worker process's in-flight work may take to finish when it is stopped
# serve's worker processes yield the CPU to serve when both want it: an acknowledgement is a
# webhook's whole latency, a turn waits for a model anyway (measured: ack p99 at 200/s, see README).
WORKER_NICENESS = 5


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default WARELAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default WARELAY_PORT).")] = None,
    workers: Annotated[bool, typer.Option(help="Run workers in this process.")] = True,
    worker_processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=64,
            help="Run the workers in this many processes beside this one, which keeps the webhooks and "
            "the API (default WARELAY_WORKER__PROCESSES, 0: workers run in this process). One process "
            "uses one core: with N cores, N-1 or N worker processes.",
        ),
    ] = None,
) -> None:
    """Receive webhooks and serve the API, with workers in this process or in worker processes."""
    import uvicorn

    from warelay.app import create_app
    from warelay.supervisor import WorkerProcesses, relaunch_command

    settings = _settings()
    processes = settings.worker.processes if worker_processes is None else worker_processes
    supervisor = None
    if processes:
        command = relaunch_command(
            "worker", "--supervised", "--grace", str(WORKER_GRACE), "--nice", str(WORKER_NICENESS)
        )
        supervisor = WorkerProcesses(command, processes, grace=WORKER_GRACE)
    application = create_app(settings, run_workers=workers and not processes, worker_processes=supervisor)
    tune_gc()
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        timeout_graceful_shutdown=30,
    )


@app.command()
def worker(
    grace: Annotated[
        float, typer.Option(help="Seconds in-flight work may take to finish on SIGTERM.")
    ] = WORKER_GRACE,
    nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="Lower this process's CPU priority by this much (as nice(1) does), so that a serve "
            "process on the same host answers webhooks first when the CPU is busy.",
        ),
    ] = 0,
    supervised: Annotated[
        bool,
        typer.Option(
            hidden=True,
            help="Started by `warelay serve --worker-processes`: skip the set-up serve did, and stop "
            "when serve is gone.",
        ),
    ] = False,
) -> None:
    """Run workers only (turns and sends), e.g. as extra processes beside `warelay serve`."""
    from warelay.runtime import Runtime
    from warelay.supervisor import follow_parent

    settings = _settings()
    settings.check_serving()
    if nice:
        os.nice(nice)

    async def run() -> None:
        runtime = Runtime(
            settings, run_workers=True, migrate=not supervised, setup=not supervised, share_work=True
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.create_task(follow_parent(stop, runtime.turns.nudge)) if supervised else None
        await runtime.start()
        tune_gc()
        console.print(f"warelay worker {runtime.turns.owner} running; SIGTERM stops it")
        await stop.wait()
        await runtime.stop(grace)
        if watch is not None:  # it may still be reading serve's pipe
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    _run(run())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done at the start of serve, worker and demo)."""
    from warelay.storage.db import current_revision

    settings = _settings()

    async def work(engine: AsyncEngine) -> str | None:
        return await current_revision(engine)

    revision = _run(_with_engine(settings, work))
    out.print(f"database at revision {revision}")


# ------------------------------------------------------------------------------------------ demo


def demo_secret_key(directory: Path = DEMO_DIR) -> str:
    """The demo's secret key: WARELAY_SECRET_KEY, else one generated once into a local file."""
    if os.environ.get("WARELAY_SECRET_KEY"):
        return os.environ["WARELAY_SECRET_KEY"]
    path = directory / "secret.key"
    if path.exists():
        return path.read_text().strip()
    directory.mkdir(parents=True, exist_ok=True)
    key = new_secret_key()
    path.write_text(key + "\n")
    path.chmod(0o600)
    console.print(f"generated a secret key into {path} (keep it: it decrypts stored credentials)")
    return key


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="warelay's port.")] = 8000,
    simulator_port: Annotated[int, typer.Option(help="The simulator's port (chat page).")] = 9000,
    host: Annotated[str, typer.Option(help="Address both listen on.")] = "127.0.0.1",
    database_url: Annotated[
        str, typer.Option(help="Database URL.")
    ] = f"sqlite+aiosqlite:///{DEMO_DIR}/demo.db",
) -> None:
    """Run warelay with the WhatsApp simulator and the offline knowledge agent; chat in your browser."""
    import uvicorn

    from warelay.app import create_app
    from warelay.simulator.server import Simulator, SimulatorConfig, create_simulator_app

    sim_url = f"http://{host}:{simulator_port}"
    app_secret = secrets.token_hex(16)
    access_token = secrets.token_urlsafe(24)
    sim_config = SimulatorConfig(
        webhook_url=f"http://{host}:{port}/webhooks/whatsapp",
        app_secret=app_secret,
        access_token=access_token,
        base_url=sim_url,
    )
    settings = _settings(
        database_url=database_url,
        secret_key=demo_secret_key(),
        public_url=f"http://{host}:{port}",
        whatsapp={
            "phone_number_id": sim_config.phone_number_id,
            "display_phone_number": sim_config.display_phone_number,
            "display_name": "Kopi Nusantara (demo)",
            "access_token": access_token,
            "app_secret": app_secret,
            "verify_token": secrets.token_urlsafe(12),
            "graph_url": sim_url,
            "throughput_mps": 80,
            "tenant": os.environ.get("WARELAY_WHATSAPP__TENANT", "default"),
        },
        agent={
            "kind": os.environ.get("WARELAY_AGENT__KIND") or None,
            "knowledge_dir": str(demo_knowledge_dir()),
        },
        # Media the simulator's users send is kept with the demo's other files.
        media={"directory": os.environ.get("WARELAY_MEDIA__DIRECTORY") or str(DEMO_DIR / "media")},
    )

    async def run() -> None:
        # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler turns
        # that into a clean exit (status 0) after the graceful shutdown both servers already did.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        simulator = Simulator(sim_config)
        application = create_app(settings)
        warelay_server = uvicorn.Server(
            uvicorn.Config(application, host=host, port=port, log_level="warning", lifespan="on")
        )
        sim_server = uvicorn.Server(
            uvicorn.Config(
                create_simulator_app(simulator), host=host, port=simulator_port, log_level="warning"
            )
        )
        await simulator.start()
        tasks = [asyncio.create_task(warelay_server.serve()), asyncio.create_task(sim_server.serve())]
        while not (warelay_server.started and sim_server.started):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        if warelay_server.started and sim_server.started:
            out.print(
                f"\n[bold green]warelay demo is running[/bold green]\n"
                f"  chat as a WhatsApp user:  [bold]{sim_url}/[/bold]\n"
                f"  warelay API docs:         http://{host}:{port}/docs\n"
                f"  agent: {settings.agent_kind}, database: {database_url}\n"
                "Press Ctrl+C to stop.",
                highlight=False,
            )
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        warelay_server.should_exit = True
        sim_server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await simulator.stop()
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # re-raise the server's failure

    _run(run())


def demo_knowledge_dir() -> Path:
    """The example knowledge base shipped with warelay."""
    return Path(__file__).with_name("demo") / "knowledge"


@app.command()
def simulator(
    webhook_url: Annotated[
        str, typer.Option(help="warelay's webhook URL.")
    ] = "http://127.0.0.1:8000/webhooks/whatsapp",
    app_secret: Annotated[
        str, typer.Option(envvar="WARELAY_WHATSAPP__APP_SECRET", help="App secret to sign with.")
    ] = "",
    access_token: Annotated[
        str, typer.Option(envvar="WARELAY_WHATSAPP__ACCESS_TOKEN", help="Bearer token warelay must present.")
    ] = "",
    phone_number_id: Annotated[
        str,
        typer.Option(envvar="WARELAY_WHATSAPP__PHONE_NUMBER_ID", help="The simulated business number's id."),
    ] = "106540352242922",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 9000,
) -> None:
    """Run the local WhatsApp simulator (Graph API + chat page) on its own."""
    from warelay.simulator.server import Simulator, SimulatorConfig, run_simulator

    if not app_secret or not access_token:
        raise ConfigError(
            "the simulator needs --app-secret and --access-token (the same values warelay uses)"
        )
    config = SimulatorConfig(
        webhook_url=webhook_url,
        app_secret=app_secret,
        access_token=access_token,
        phone_number_id=phone_number_id,
        base_url=f"http://{host}:{port}",
    )

    async def run() -> None:
        sim = Simulator(config)
        await sim.start()
        console.print(f"simulator on http://{host}:{port}/ delivering to {webhook_url}")
        try:
            await run_simulator(sim, host, port)
        finally:
            await sim.stop()

    _run(run())


# ------------------------------------------------------------------------------------------ knowledge


async def _tenant_and_agent(
    engine: AsyncEngine, settings: Settings, tenant: str | None, agent: str | None
) -> tuple[int, int]:
    from warelay.numbers import ensure_agent
    from warelay.storage.models import Tenant

    subdomain = tenant or settings.whatsapp.tenant
    async with engine.connect() as conn:
        tenant_id = (await conn.execute(select(Tenant.id).where(Tenant.subdomain == subdomain))).scalar()
    if tenant_id is None:
        if tenant is not None:
            raise LookupError(f"no tenant {subdomain!r}")
        from warelay.numbers import ensure_tenant

        tenant_id = await ensure_tenant(engine, subdomain)
    agent_id = await ensure_agent(
        engine, tenant_id=tenant_id, name=agent or settings.agent.name, kind=settings.agent_kind
    )
    return int(tenant_id), agent_id


TenantOpt = Annotated[
    str | None, typer.Option("--tenant", help="Tenant subdomain (default: the env number's).")
]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Agent name (default: WARELAY_AGENT__NAME).")]


@knowledge_app.command("add")
def knowledge_add(
    files: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV, Markdown or text files."),
    ],
    tenant: TenantOpt = None,
    agent: AgentOpt = None,
) -> None:
    """Add knowledge files (re-adding a file replaces its passages)."""
    from warelay.knowledge.ingest import add_document

    settings = _settings()

    async def work(engine: AsyncEngine) -> None:
        tenant_id, agent_id = await _tenant_and_agent(engine, settings, tenant, agent)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            for path in files:
                task = progress.add_task(path.name, total=None)

                def report(done: int, total: int, task: Any = task) -> None:
                    progress.update(task, completed=done, total=total)

                info = await add_document(
                    engine,
                    tenant_id=tenant_id,
                    agent_id=agent_id,
                    name=path.name,
                    data=path.read_bytes(),
                    on_progress=report,
                    embeddings=settings.embeddings,
                    decrypt=SecretBox(settings.secret_keys).decrypt if settings.secret_keys else None,
                )
                progress.update(task, completed=info.passages, total=info.passages)
                if info.embedding_error:
                    console.print(
                        f"[yellow]{path.name}: searchable by full text only; embeddings failed: "
                        f"{info.embedding_error}[/yellow]"
                    )
                elif info.embedding_model:
                    console.print(f"{path.name}: embedded with {info.embedding_model}")
        out.print(f"added {len(files)} file(s)")

    with _fail_cleanly():
        _run(_with_engine(settings, work))


@knowledge_app.command("list")
def knowledge_list(tenant: TenantOpt = None, agent: AgentOpt = None) -> None:
    """List knowledge files."""
    from warelay.knowledge.ingest import list_documents

    settings = _settings()

    async def work(engine: AsyncEngine) -> None:
        tenant_id, agent_id = await _tenant_and_agent(engine, settings, tenant, agent)
        docs = await list_documents(engine, tenant_id=tenant_id, agent_id=agent_id)
        table = _table("name", "passages", "sha256", "added")
        for doc in docs:
            table.add_row(
                doc.name, str(doc.passages), doc.sha256[:12], doc.created_at.isoformat(timespec="seconds")
            )
        out.print(table)

    with _fail_cleanly():
        _run(_with_engine(settings, work))


@knowledge_app.command("remove")
def knowledge_remove(
    name: Annotated[str, typer.Argument(help="File name as listed.")],
    tenant: TenantOpt = None,
    agent: AgentOpt = None,
) -> None:
    """Remove a knowledge file and its passages."""
    from warelay.knowledge.ingest import remove_document

    settings = _settings()

    async def work(engine: AsyncEngine) -> bool:
        tenant_id, agent_id = await _tenant_and_agent(engine, settings, tenant, agent)
        return await remove_document(engine, tenant_id=tenant_id, agent_id=agent_id, name=name)

    with _fail_cleanly():
        removed = _run(_with_engine(settings, work))
    if not removed:
        console.print(f"[red]no knowledge file {name!r}[/red]")
        raise typer.Exit(1)
    out.print(f"removed {name}")


# ------------------------------------------------------------------------------------------ tenants


@tenants_app.command("add")
def tenants_add(
    subdomain: Annotated[
        str, typer.Argument(help="The tenant's subdomain (lower-case letters, digits, '-').")
    ],
    name: Annotated[str | None, typer.Option(help="A display name.")] = None,
) -> None:
    """Add a tenant."""
    from warelay.tenancy import ConflictError, create_tenant

    settings = _settings()
    with _fail_cleanly():
        try:
            _run(_with_engine(settings, lambda engine: create_tenant(engine, subdomain=subdomain, name=name)))
        except ConflictError as exc:
            raise ValueError(str(exc)) from None
    out.print(f"tenant {subdomain} added")


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants with how many numbers, agents and active keys each has."""
    from warelay.tenancy import list_tenants

    settings = _settings()
    table = _table("subdomain", "name", "numbers", "agents", "keys", "created")
    for t in _run(_with_engine(settings, lambda engine: list_tenants(engine))):
        table.add_row(
            t.subdomain,
            t.name or "",
            str(t.numbers),
            str(t.agents),
            str(t.keys),
            t.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@tenants_app.command("remove")
def tenants_remove(
    subdomain: Annotated[str, typer.Argument(help="The tenant's subdomain.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a tenant with everything it owns: numbers, conversations, agents, knowledge, keys."""
    from warelay.tenancy import delete_tenant, env_tenant

    settings = _settings()
    if subdomain == env_tenant(settings):
        console.print(
            f"[red]warelay: tenant {subdomain!r} owns the number configured through WARELAY_WHATSAPP__* "
            "(it would be created again at the next start); remove that configuration first[/red]"
        )
        raise typer.Exit(1)
    if not yes and not typer.confirm(
        f"Remove tenant {subdomain} with its numbers, conversations, agents, knowledge and keys?"
    ):
        raise typer.Exit(1)
    if _run(_with_engine(settings, lambda engine: delete_tenant(engine, subdomain=subdomain))) is None:
        console.print(f"[red]warelay: no tenant {subdomain!r}[/red]")
        raise typer.Exit(1)
    out.print(f"tenant {subdomain} removed")


# ------------------------------------------------------------------------------------------ numbers


def webhook_url(settings: Settings) -> str:
    """The URL to paste into Meta's webhook configuration."""
    from warelay.tenancy import webhook_url as url

    return url(settings)


@numbers_app.command("add")
def numbers_add(
    phone_number_id: Annotated[str, typer.Option(help="Meta's Phone Number ID.")],
    access_token: Annotated[str, typer.Option(help="System-user access token.", prompt=False)],
    app_secret: Annotated[str, typer.Option(help="The Meta app's secret (verifies webhooks).")],
    verify_token: Annotated[
        str | None, typer.Option(help="Token Meta echoes when verifying the webhook.")
    ] = None,
    tenant: Annotated[str, typer.Option(help="Tenant subdomain (created if missing).")] = "default",
    agent: Annotated[
        str | None, typer.Option(help="Agent name (default: the tenant's default agent).")
    ] = None,
    display_phone_number: Annotated[str | None, typer.Option(help="The number, e.g. 15551234567.")] = None,
    display_name: Annotated[str | None, typer.Option(help="A friendly name.")] = None,
    app_id: Annotated[str | None, typer.Option()] = None,
    business_id: Annotated[str | None, typer.Option()] = None,
    api_version: Annotated[str, typer.Option()] = "v23.0",
    graph_url: Annotated[str, typer.Option()] = "https://graph.facebook.com",
    throughput_mps: Annotated[int, typer.Option(min=1, max=1000)] = 80,
) -> None:
    """Add (or update) a WhatsApp number; prints the webhook URL to give Meta."""
    from warelay.numbers import NumberFields, ensure_agent, ensure_tenant, upsert_number

    settings = _settings()
    box = SecretBox(settings.secret_keys)

    async def work(engine: AsyncEngine) -> None:
        tenant_id = await ensure_tenant(engine, tenant)
        agent_id = None
        if agent is not None:
            agent_id = await ensure_agent(engine, tenant_id=tenant_id, name=agent, kind=settings.agent_kind)
        await upsert_number(
            engine,
            box,
            tenant_id=tenant_id,
            agent_id=agent_id,
            fields=NumberFields(
                phone_number_id=phone_number_id,
                access_token=access_token,
                app_secret=app_secret,
                verify_token=verify_token,
                display_phone_number=display_phone_number,
                display_name=display_name,
                app_id=app_id,
                business_id=business_id,
                api_version=api_version,
                graph_url=graph_url,
                throughput_mps=throughput_mps,
            ),
        )

    _run(_with_engine(settings, work))
    out.print(f"number {phone_number_id} saved for tenant {tenant}")
    out.print(f"webhook URL: {webhook_url(settings)}")


@numbers_app.command("list")
def numbers_list() -> None:
    """List numbers (secrets are never shown)."""
    from warelay.storage.models import Agent, Number, Tenant

    settings = _settings()

    async def work(engine: AsyncEngine) -> list[Any]:
        async with engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(*Number.__table__.c, Tenant.subdomain, Agent.name.label("agent_name"))
                        .join(Tenant, Tenant.id == Number.tenant_id)
                        .outerjoin(Agent, Agent.id == Number.agent_id)
                        .order_by(Number.id)
                    )
                ).all()
            )

    rows = _run(_with_engine(settings, work))
    table = _table("phone number id", "number", "name", "tenant", "agent", "status", "tier", "webhook URL")
    for n in rows:
        table.add_row(
            n.phone_number_id,
            n.display_phone_number or "",
            n.display_name or "",
            n.subdomain,
            n.agent_name or "(default)",
            n.status,
            str(n.throughput_mps),
            webhook_url(settings),
        )
    out.print(table)


def _refuse_env_number(settings: Settings, phone_number_id: str) -> None:
    from warelay.tenancy import env_number_id

    if phone_number_id == env_number_id(settings):
        console.print(
            f"[red]warelay: number {phone_number_id} is configured through WARELAY_WHATSAPP__* and "
            "rewritten at every start; change it there[/red]"
        )
        raise typer.Exit(1)


@numbers_app.command("update")
def numbers_update(
    phone_number_id: Annotated[str, typer.Argument(help="Meta's Phone Number ID of the number.")],
    display_phone_number: Annotated[
        str | None, typer.Option(help="The number, e.g. +1-234-567-8900.")
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="A friendly name.")] = None,
    status: Annotated[str | None, typer.Option(help="active or inactive (inbound traffic ignored).")] = None,
    agent: Annotated[str | None, typer.Option(help="The tenant's agent that answers it.")] = None,
    default_agent: Annotated[
        bool, typer.Option("--default-agent", help="Answer with the tenant's default agent again.")
    ] = False,
    access_token: Annotated[str | None, typer.Option(help="A new system-user access token.")] = None,
    app_secret: Annotated[str | None, typer.Option(help="A new app secret.")] = None,
    verify_token: Annotated[str | None, typer.Option(help="A new webhook verify token.")] = None,
    app_id: Annotated[str | None, typer.Option()] = None,
    business_id: Annotated[str | None, typer.Option()] = None,
    api_version: Annotated[str | None, typer.Option()] = None,
    graph_url: Annotated[str | None, typer.Option()] = None,
    throughput_mps: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
) -> None:
    """Change some of a number's fields (the others stay as they are); prints the webhook URL."""
    from pydantic import ValidationError

    from warelay.api.admin_schemas import NumberUpdate
    from warelay.tenancy import agent_id_by_name, get_number, update_number

    given = {
        key: value
        for key, value in locals().items()
        if key in NumberUpdate.model_fields and value is not None
    }
    if agent is not None and default_agent:
        console.print("[red]warelay: --agent and --default-agent exclude each other[/red]")
        raise typer.Exit(2)
    settings = _settings()
    _refuse_env_number(settings, phone_number_id)
    try:
        checked = NumberUpdate.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        console.print(f"[red]warelay: {problems}[/red]")
        raise typer.Exit(1) from None
    changes: dict[str, Any] = {
        key: value.get_secret_value() if hasattr(value, "get_secret_value") else value
        for key, value in checked.model_dump(exclude_unset=True).items()
        if key != "agent"
    }
    box = SecretBox(settings.secret_keys)

    async def work(engine: AsyncEngine) -> Any:
        number = await get_number(engine, tenant_id=None, phone_number_id=phone_number_id)
        if number is None:
            raise LookupError(f"no number {phone_number_id!r}")
        if default_agent:
            changes["agent_id"] = None
        elif agent is not None:
            from warelay.tenancy import get_tenant

            tenant = await get_tenant(engine, subdomain=number.tenant)
            assert tenant is not None  # the number's own tenant
            changes["agent_id"] = await agent_id_by_name(engine, tenant_id=tenant.id, name=agent)
            if changes["agent_id"] is None:
                raise LookupError(f"no agent {agent!r} in tenant {number.tenant!r}")
        return await update_number(
            engine, box, tenant_id=None, phone_number_id=phone_number_id, changes=changes
        )

    with _fail_cleanly():
        record = _run(_with_engine(settings, work))
        if record is None:
            raise LookupError(f"no number {phone_number_id!r}")
    out.print(
        f"number {phone_number_id} of tenant {record.tenant} updated (running servers reload it within 30 s)"
    )
    out.print(f"webhook URL: {webhook_url(settings)}")


@numbers_app.command("remove")
def numbers_remove(
    phone_number_id: Annotated[str, typer.Argument(help="Meta's Phone Number ID of the number.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a number with its contacts, conversations and messages."""
    from warelay.tenancy import delete_number

    settings = _settings()
    _refuse_env_number(settings, phone_number_id)
    if not yes and not typer.confirm(f"Remove number {phone_number_id} with its conversations and messages?"):
        raise typer.Exit(1)
    removed = _run(
        _with_engine(
            settings, lambda engine: delete_number(engine, tenant_id=None, phone_number_id=phone_number_id)
        )
    )
    if not removed:
        console.print(f"[red]warelay: no number {phone_number_id!r}[/red]")
        raise typer.Exit(1)
    out.print(f"number {phone_number_id} removed")


# ------------------------------------------------------------------------------------------ keys


@keys_app.command("create")
def keys_create(
    scope: Annotated[
        list[str], typer.Option("--scope", help=f"Scope to grant (repeat): {', '.join(SCOPES)}.")
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Tenant subdomain; omit for a platform-wide key.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option(
            "--rate-limit",
            min=0,
            max=1_000_000,
            help="Requests per minute for this key, counted across all processes (0: unlimited; "
            "default WARELAY_API__RATE_LIMIT_PER_MINUTE).",
        ),
    ] = None,
) -> None:
    """Create an API key; the key is printed once, alone on the last line."""
    from warelay.storage.models import ApiKey, Tenant, utcnow

    unknown = sorted(set(scope) - set(SCOPES))
    if unknown:
        console.print(f"[red]unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}[/red]")
        raise typer.Exit(2)
    settings = _settings()
    box = SecretBox(settings.secret_keys)
    key = new_api_key()

    async def work(engine: AsyncEngine) -> int:
        async with engine.begin() as conn:
            tenant_id = None
            if tenant is not None:
                tenant_id = (await conn.execute(select(Tenant.id).where(Tenant.subdomain == tenant))).scalar()
                if tenant_id is None:
                    raise LookupError(f"no tenant {tenant!r}")
            result = await conn.execute(
                insert(ApiKey).values(
                    tenant_id=tenant_id,
                    name=name,
                    prefix=key[:12],
                    key_hash=box.hash_key(key),
                    scopes=sorted(set(scope)),
                    rate_limit_per_minute=rate_limit,
                    created_at=utcnow(),
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]  # always present here

    with _fail_cleanly():
        key_id = _run(_with_engine(settings, work))
    console.print(f"key {key_id} created ({', '.join(sorted(set(scope)))}); it is shown only now:")
    out.print(key, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (prefixes only)."""
    from warelay.storage.models import ApiKey, Tenant

    settings = _settings()

    async def work(engine: AsyncEngine) -> list[Any]:
        async with engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(ApiKey, Tenant.subdomain)
                        .outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)
                        .order_by(ApiKey.id)
                    )
                ).all()
            )

    table = _table(
        "id", "prefix", "name", "tenant", "scopes", "per minute", "created", "last used", "revoked"
    )
    default_limit = settings.api.rate_limit_per_minute
    for k in _run(_with_engine(settings, work)):
        limit = default_limit if k.rate_limit_per_minute is None else k.rate_limit_per_minute
        table.add_row(
            str(k.id),
            k.prefix + "…",
            k.name or "",
            k.subdomain or "(platform)",
            ", ".join(k.scopes),
            (str(limit) if limit else "unlimited")
            + (" (default)" if k.rate_limit_per_minute is None else ""),
            k.created_at.isoformat(timespec="seconds"),
            k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "",
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `warelay keys list`).")],
) -> None:
    """Revoke an API key."""
    from warelay.storage.models import ApiKey, utcnow

    settings = _settings()

    async def work(engine: AsyncEngine) -> int:
        async with engine.begin() as conn:
            result = await conn.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return int(result.rowcount)

    if not _run(_with_engine(settings, work)):
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"key {key_id} revoked")


# ------------------------------------------------------------------------------------------ send


# ------------------------------------------------------------------------------------------- agents

agents_app = typer.Typer(
    help="Named agents of each tenant (kind, model, prompt, tools, texts).", no_args_is_help=True
)
app.add_typer(agents_app, name="agents")

AgentTenantOpt = Annotated[
    str | None, typer.Option("--tenant", help="Tenant subdomain (default: WARELAY_WHATSAPP__TENANT).")
]


def _parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs; each value is read as YAML (``false``, ``0.2``, ``[a, b]``, text)."""
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes key=value, not {pair!r}")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values


# The configuration keys that have options of their own in `agents add` and `agents update`.
AGENT_OPTIONS = frozenset(
    {
        "business_name",
        "model",
        "base_url",
        "api_key",
        "system_prompt",
        "system_prompt_file",
        "temperature",
        "max_tokens",
        "history_window",
        "tools",
        "reply_language",
        "acknowledgement",
        "fallback_text",
        "timeout_seconds",
    }
)


def _agent_changes(
    sets: list[str] | None, *, config_file: Path | None = None, options: dict[str, Any]
) -> dict[str, Any]:
    import yaml

    changes: dict[str, Any] = {}
    if config_file is not None:
        loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: an agent configuration is a mapping of keys to values")
        changes.update(loaded)
    changes.update({key: value for key, value in options.items() if value is not None})
    changes.update(_parse_sets(sets))
    if isinstance(changes.get("tools"), str):
        changes["tools"] = [t.strip() for t in changes["tools"].split(",") if t.strip()]
    if changes.get("system_prompt_file") is not None:
        prompt = Path(str(changes["system_prompt_file"]))
        if not prompt.is_file():
            raise ValueError(f"system prompt file {str(prompt)!r} is not a file")
        changes["system_prompt_file"] = str(prompt.resolve())
    return changes


def _print_agent(record: Any) -> None:
    import yaml

    out.print(f"agent {record.name} (tenant {record.tenant}, kind {record.kind})")
    if record.numbers:
        out.print(f"numbers: {', '.join(record.numbers)}")
    shown = record.config.public()
    out.print(yaml.safe_dump(shown, sort_keys=True, allow_unicode=True).rstrip() if shown else "(defaults)")
    if record.new_signing_secret:
        console.print("signing secret for its events (X-Warelay-Signature); it is shown only now:")
        out.print(record.new_signing_secret, highlight=False, soft_wrap=True)


ModelOpt = Annotated[str | None, typer.Option(help="Model name (llm).")]
BaseUrlOpt = Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (llm).")]
ApiKeyOpt = Annotated[str | None, typer.Option(help="The endpoint's API key (stored encrypted).")]
PromptOpt = Annotated[
    str | None, typer.Option(help="System prompt ({business_name}, {user_name}, {tenant}).")
]
PromptFileOpt = Annotated[Path | None, typer.Option(help="System prompt from a file (read at each start).")]
ToolsOpt = Annotated[str | None, typer.Option(help="Enabled tools, comma-separated (buttons,list,state,…).")]
LanguageOpt = Annotated[
    str | None, typer.Option(help="Reply language: auto (the user's) or a code (es, en, id…).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Any configuration key: --set key=value (repeat).")
]
ConfigFileOpt = Annotated[Path | None, typer.Option(help="A YAML file of configuration keys.", exists=True)]
NumberOpt = Annotated[
    list[str] | None, typer.Option("--number", help="Phone number id this agent answers (repeat).")
]


@agents_app.command("add")
def agents_add(
    name: Annotated[str, typer.Argument(help="The agent's name, unique in its tenant.")],
    kind: Annotated[str, typer.Option(help="knowledge, llm, external, …")],
    tenant: AgentTenantOpt = None,
    business_name: Annotated[str | None, typer.Option(help="Who the agent speaks for.")] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    system_prompt: PromptOpt = None,
    system_prompt_file: PromptFileOpt = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Max output tokens.")] = None,
    history_window: Annotated[int | None, typer.Option(help="Earlier messages the agent sees.")] = None,
    tools: ToolsOpt = None,
    reply_language: LanguageOpt = None,
    acknowledgement: Annotated[str | None, typer.Option(help="Sent at once, before the answer.")] = None,
    fallback_text: Annotated[str | None, typer.Option(help="Sent when the agent fails for good.")] = None,
    timeout_seconds: Annotated[float | None, typer.Option("--timeout", help="Seconds per answer.")] = None,
    config_file: ConfigFileOpt = None,
    set_: SetOpt = None,
    number: NumberOpt = None,
) -> None:
    """Add an agent (or replace the configuration of an existing one)."""
    options = {key: value for key, value in locals().items() if key in AGENT_OPTIONS}
    from warelay.agents.catalog import link_numbers, save_agent

    settings = _settings()
    box = SecretBox(settings.secret_keys)
    where = tenant or settings.whatsapp.tenant

    async def work(engine: AsyncEngine) -> Any:
        changes = _agent_changes(set_, config_file=config_file, options=options)
        record = await save_agent(
            engine, box, tenant=where, name=name, kind=kind, changes=changes, replace=True
        )
        if number:
            await link_numbers(engine, tenant=where, name=name, numbers=number)
            record = replace(record, numbers=tuple(sorted({*record.numbers, *number})))
        return record

    with _fail_cleanly():
        record = _run(_with_engine(settings, work))
    _print_agent(record)


@agents_app.command("update")
def agents_update(
    name: Annotated[str, typer.Argument(help="The agent's name.")],
    tenant: AgentTenantOpt = None,
    kind: Annotated[str | None, typer.Option(help="Change its kind.")] = None,
    business_name: Annotated[str | None, typer.Option(help="Who the agent speaks for.")] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    system_prompt: PromptOpt = None,
    system_prompt_file: PromptFileOpt = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Max output tokens.")] = None,
    history_window: Annotated[int | None, typer.Option(help="Earlier messages the agent sees.")] = None,
    tools: ToolsOpt = None,
    reply_language: LanguageOpt = None,
    acknowledgement: Annotated[str | None, typer.Option(help="Sent at once, before the answer.")] = None,
    fallback_text: Annotated[str | None, typer.Option(help="Sent when the agent fails for good.")] = None,
    timeout_seconds: Annotated[float | None, typer.Option("--timeout", help="Seconds per answer.")] = None,
    config_file: ConfigFileOpt = None,
    set_: SetOpt = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Back to the default (repeat).")] = None,
    number: NumberOpt = None,
) -> None:
    """Change some of an agent's settings; the others stay as they are."""
    options = {key: value for key, value in locals().items() if key in AGENT_OPTIONS}
    from warelay.agents.catalog import link_numbers, save_agent

    settings = _settings()
    box = SecretBox(settings.secret_keys)
    where = tenant or settings.whatsapp.tenant

    async def work(engine: AsyncEngine) -> Any:
        changes = _agent_changes(set_, config_file=config_file, options=options)
        record = await save_agent(
            engine,
            box,
            tenant=where,
            name=name,
            kind=kind,
            changes=changes,
            unset=tuple(unset or ()),
            create=False,
        )
        if number:
            await link_numbers(engine, tenant=where, name=name, numbers=number)
            record = replace(record, numbers=tuple(sorted({*record.numbers, *number})))
        return record

    with _fail_cleanly():
        record = _run(_with_engine(settings, work))
    _print_agent(record)


@agents_app.command("list")
def agents_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's agents.")] = None,
) -> None:
    """List agents (secrets are never shown)."""
    from warelay.agents.catalog import list_agents

    settings = _settings()
    box = SecretBox(settings.secret_keys)
    with _fail_cleanly():
        records = _run(_with_engine(settings, lambda engine: list_agents(engine, box, tenant=tenant)))
    table = _table("tenant", "name", "kind", "numbers", "model", "tools", "language")
    for r in records:
        table.add_row(
            r.tenant,
            r.name,
            r.kind,
            ", ".join(r.numbers) or "",
            r.config.model or "",
            ", ".join(r.config.tools or []),
            r.config.reply_language or "",
        )
    out.print(table)


@agents_app.command("show")
def agents_show(name: Annotated[str, typer.Argument()], tenant: AgentTenantOpt = None) -> None:
    """Show one agent's configuration (secrets masked)."""
    from warelay.agents.catalog import get_agent

    settings = _settings()
    box = SecretBox(settings.secret_keys)
    where = tenant or settings.whatsapp.tenant
    with _fail_cleanly():
        record = _run(_with_engine(settings, lambda engine: get_agent(engine, box, tenant=where, name=name)))
        if record is None:
            raise LookupError(f"no agent {name!r} in tenant {where!r}")
    _print_agent(record)


@agents_app.command("rotate-secret")
def agents_rotate_secret(name: Annotated[str, typer.Argument()], tenant: AgentTenantOpt = None) -> None:
    """Give an external agent a new signing secret (printed once, alone on the last line)."""
    from warelay.agents.catalog import rotate_signing_secret

    settings = _settings()
    box = SecretBox(settings.secret_keys)
    where = tenant or settings.whatsapp.tenant
    with _fail_cleanly():
        secret = _run(
            _with_engine(settings, lambda engine: rotate_signing_secret(engine, box, tenant=where, name=name))
        )
    console.print(f"agent {name}: new signing secret; the old one no longer verifies. It is shown only now:")
    out.print(secret, highlight=False, soft_wrap=True)


@agents_app.command("remove")
def agents_remove(name: Annotated[str, typer.Argument()], tenant: AgentTenantOpt = None) -> None:
    """Remove an agent and its knowledge; its numbers go back to the tenant's default agent."""
    from warelay.agents.catalog import delete_agent

    settings = _settings()
    where = tenant or settings.whatsapp.tenant
    with _fail_cleanly():
        removed = _run(_with_engine(settings, lambda engine: delete_agent(engine, tenant=where, name=name)))
        if not removed:
            raise LookupError(f"no agent {name!r} in tenant {where!r}")
    out.print(f"agent {name} removed from tenant {where}")


@app.command()
def send(
    to: Annotated[str, typer.Option(help="The user's WhatsApp number (digits).")],
    text: Annotated[str, typer.Argument(help="The message (Markdown is converted to WhatsApp markup).")],
    number: Annotated[
        str | None, typer.Option(help="Sending number's phone_number_id (default: the env number).")
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for delivery to Meta (0: just queue).")] = 30.0,
) -> None:
    """Send a text to a user through the outbox (formatting, splitting, pacing and retries included)."""
    from warelay.outbound.manual import send_text

    settings = _settings()
    settings.check_serving()
    target = number or settings.whatsapp.phone_number_id
    if not target:
        raise ConfigError(
            "say which number sends: --number PHONE_NUMBER_ID (or set WARELAY_WHATSAPP__PHONE_NUMBER_ID)"
        )
    with _fail_cleanly():
        statuses = _run(send_text(settings, phone_number_id=target, to=to.lstrip("+"), text=text, wait=wait))
    for message_id, status in statuses:
        out.print(f"message {message_id}: {status}")
    if any(s == "failed" for _, s in statuses):
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------ eval


@app.command("eval")
def eval_suite(
    suite_file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.yaml",
            help="The suite: an agent and scripted conversations (example: src/warelay/demo/eval.yaml).",
        ),
    ],
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Database to run on (default: a throwaway SQLite file). The suite's agent is set up "
            "in a tenant of its own, 'eval'."
        ),
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the results, replies included, to this JSON file."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Conversations played at once.")] = 4,
) -> None:
    """Play scripted conversations through an agent and check every reply: exit 0 when all pass,
    1 when an assertion fails, 2 when the suite is invalid."""
    import json

    from rich.text import Text

    from warelay.evaluation import (
        EvalRunError,
        EvalSetupError,
        SuiteError,
        load_suite,
        run_suite,
        summary_line,
        verdict_table,
    )

    def refuse(message: str, code: int) -> typer.Exit:
        console.print(Text(f"warelay eval: {message}", style="red"), soft_wrap=True)
        return typer.Exit(code)

    try:
        suite = load_suite(suite_file)
        settings = load_settings()
    except (SuiteError, ConfigError) as exc:
        raise refuse(str(exc), 2) from None
    if json_file is not None and not json_file.parent.is_dir():
        raise refuse(f"--json: no folder {str(json_file.parent)!r} to write {json_file.name} in", 2)
    # The table is the output: warelay's own INFO lines only when asked for (WARELAY_LOG_LEVEL).
    level = settings.log_level if os.environ.get("WARELAY_LOG_LEVEL") else "WARNING"
    configure_logging(level, json_output=settings.log_json)

    total = len(suite.conversations)
    with console.status(f"playing {total} conversation(s)…") as status:
        done = 0

        def progress(_result: Any) -> None:
            nonlocal done
            done += 1
            status.update(f"played {done}/{total} conversation(s)…")

        try:
            result = _run(
                run_suite(
                    suite,
                    settings,
                    name=suite.name or suite_file.name,
                    database_url=database_url,
                    concurrency=concurrency,
                    on_conversation=progress,
                )
            )
        except EvalSetupError as exc:
            raise refuse(str(exc), 2) from None
        except (EvalRunError, ConfigError) as exc:
            raise refuse(str(exc), 1) from None
    out.print(verdict_table(result))
    out.print(summary_line(result))
    if json_file is not None:
        try:
            json_file.write_text(json.dumps(result.to_json(), ensure_ascii=False, indent=2) + "\n")
        except OSError as exc:
            raise refuse(f"--json: cannot write {json_file}: {exc.strerror}", 1) from None
    if not result.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    main()
