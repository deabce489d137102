"""The Prefect REST API: the only module in deploy_lib that talks to the network.

Raw REST over one ``httpx.AsyncClient`` per :class:`PrefectApi`; Prefect itself is never
imported here, because ``import prefect`` costs about a second and an unchanged redeploy
must stay fast.  Every method returns plain JSON (dicts and lists) as the server sent it.

Failures are translated where they enter (see ``deploy_lib/errors.py``):

    connection refused / timed out   -> ApiUnreachable (names the URL, never the key)
    401 / 403 / 404 / 409 / 422      -> ApiUnauthorized / ApiForbidden / ApiNotFound /
                                        ApiConflict / ApiUnprocessable (quoting the detail)
    429 / 5xx after the retries      -> ApiServerError

Retries are bounded: at most ``retries + 1`` attempts per call, exponential backoff with
jitter capped at ``backoff_cap`` seconds (a ``Retry-After`` header is honoured up to the
same cap), no new attempt once ``deadline`` seconds have passed, and each attempt limited
by ``timeout``.  A request that is not safe to repeat (creating a flow run without an
idempotency key) is retried only when it never reached the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import importlib.util
import json
import os
import random
import ssl
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from deploy_lib.errors import (
    ApiCertificateError,
    ApiConflict,
    ApiError,
    ApiForbidden,
    ApiHostUnknown,
    ApiNotFound,
    ApiServerError,
    ApiUnauthorized,
    ApiUnprocessable,
    ApiUnreachable,
    RunTimedOut,
    SettingsError,
)
from deploy_lib.models import LABEL_FLOW, pool_type

DEFAULT_TIMEOUT = 30.0  # seconds per attempt (read/write/pool); connect is capped at 5 s
DEFAULT_RETRIES = 5  # so at most 6 attempts
DEFAULT_BACKOFF = 0.25  # first pause; doubles each retry, with jitter
DEFAULT_BACKOFF_CAP = 4.0  # longest single pause, Retry-After included
DEFAULT_DEADLINE = 60.0  # no new attempt starts after this many seconds
PAGE_SIZE = 200  # the server's largest page (PREFECT_SERVER_API_DEFAULT_LIMIT)
LIST_CONCURRENCY = 2  # pages of a listing in flight at once (more only queue on the server)

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})

_ERRORS: Mapping[int, type[ApiError]] = {
    401: ApiUnauthorized,
    403: ApiForbidden,
    404: ApiNotFound,
    409: ApiConflict,
    422: ApiUnprocessable,
}
# Transport errors raised before the request left this process: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The server closes a kept-alive connection after each 5xx it sends; a request that meets
# such a connection fails at once with one of these, before the server saw it.
_STALE = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
_STALE_RETRIES = 2  # immediate reconnects per call, besides the counted retries
_READ_SUFFIXES = ("/filter", "/count", "/paginate")


class PrefectApi:
    """An async client for one Prefect API (self-hosted server or Prefect Cloud).

    ``url`` is the API root such as ``http://127.0.0.1:4200/api``; ``api_key`` is sent as
    ``Authorization: Bearer`` when set and never appears in a message.  Use it as an async
    context manager; ``request_count`` and ``write_count`` count the HTTP requests sent
    (retries included), so callers can prove that an unchanged run wrote nothing.

    ``max_writes`` caps the writes in flight at once, whatever the caller's concurrency.
    A SQLite-backed server needs 1: it runs each write as a deferred transaction, so two
    overlapping writes make one fail with 503 ("database is locked") at once.
    """

    def __init__(
        self,
        url: str,
        api_key: str = "",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        backoff_cap: float = DEFAULT_BACKOFF_CAP,
        deadline: float = DEFAULT_DEADLINE,
        max_writes: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        ca_bundle: str = "",
        replicas: Sequence[str] = (),
    ) -> None:
        if not url:
            raise SettingsError("no Prefect API URL given", key="api_url")
        self.url = url.rstrip("/")
        # Every API process of one server (``url`` first), for replicas without a load
        # balancer: each request goes to the next, round robin.
        self.urls = list(dict.fromkeys([self.url, *(u.rstrip("/") for u in replicas if u)]))
        self.requests_by_url = dict.fromkeys(self.urls, 0)
        self._turn = 0
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.deadline = deadline
        self.request_count = 0
        self.write_count = 0
        # Answers that said the server was too busy (429, 5xx): callers back off on them.
        self.busy_count = 0
        self._api_key = api_key or ""
        headers = {"Accept": "application/json", "User-Agent": "deploy-lib"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._clients = [
            httpx.AsyncClient(
                base_url=base + "/",
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                transport=transport,
                follow_redirects=False,
                trust_env=not _is_loopback(base),
                verify=_tls_verify(base, ca_bundle),
            )
            for base in self.urls
        ]
        self._flow_ids: dict[str, str] = {}
        self._flow_locks: dict[str, asyncio.Lock] = {}
        self._write_gate = asyncio.Semaphore(max_writes) if max_writes else None
        self._secret_ids: tuple[str, str] | None = None

    def __repr__(self) -> str:
        return f"PrefectApi({self.url!r})"

    async def __aenter__(self) -> PrefectApi:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        for client in self._clients:
            await client.aclose()

    # -- health and flows ------------------------------------------------------------

    async def health(self) -> bool:
        """True when ``GET /health`` answers ``true``; False when it cannot be reached."""
        try:
            response = await self._request("GET", "health", retry=False)
            return response.json() is True
        except (ApiError, ValueError):  # unreachable, refused, or not JSON (a web page)
            return False

    async def server_version(self) -> str:
        """The Prefect version the server runs (``GET /admin/version``)."""
        response = await self._request("GET", "admin/version", retry=False)
        try:
            return str(response.json())
        except ValueError as exc:
            raise ApiError("the server's version is not JSON", url=self.url) from exc

    async def ensure_flow(self, name: str) -> str:
        """The id of the flow called ``name``, creating it when missing (an upsert).

        Ids are cached per instance; concurrent calls for one name send one request."""
        if name in self._flow_ids:
            return self._flow_ids[name]
        lock = self._flow_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._flow_ids:
                response = await self._request("POST", "flows/", body={"name": name})
                self._flow_ids[name] = _id_of(response)
        return self._flow_ids[name]

    # -- deployments -----------------------------------------------------------------

    async def upsert_deployment(self, body: Mapping[str, Any]) -> tuple[str, bool]:
        """Create or update (on flow + name) the deployment described by ``body``.

        ``body`` is a deployment dict (see ``DeploymentSpec``): ``flow_name`` plus the
        server's ``DeploymentCreate`` fields.  Returns ``(id, created)``: created is True
        for HTTP 201, False for 200 (an existing deployment was updated).  The server
        replaces the schedules with the ones given, including their ``active`` flags."""
        payload = dict(body)
        flow_name = payload.pop("flow_name", None)
        if flow_name is None and "flow_id" not in payload:
            raise ApiUnprocessable(
                "the deployment names no flow (flow_name)", deployment=str(body.get("name"))
            )
        who = f"{flow_name}/{payload.get('name')}"
        if flow_name is not None:
            payload["flow_id"] = await self.ensure_flow(str(flow_name))
            labels = payload.get("labels")
            payload["labels"] = {
                **(labels if isinstance(labels, Mapping) else {}),
                LABEL_FLOW: f"{payload['flow_id']}/{flow_name}",
            }
        response = await self._request("POST", "deployments/", body=payload, deployment=who)
        return _id_of(response), response.status_code == 201

    async def update_deployment(
        self, deployment_id: str, patch: Mapping[str, Any], *, deployment: str | None = None
    ) -> None:
        """PATCH only the fields in ``patch`` (the server's ``DeploymentUpdate``).

        With schedules that carry a ``slug``, the server updates them in place, so a
        schedule's ``active`` flag survives when the patch leaves it out."""
        await self._request(
            "PATCH", f"deployments/{deployment_id}", body=dict(patch), deployment=deployment
        )

    async def read_deployment(self, deployment_id: str) -> dict[str, Any]:
        """The deployment with this id; ApiNotFound when there is none."""
        response = await self._request("GET", f"deployments/{deployment_id}")
        return _as_dict(response.json())

    async def read_deployment_by_name(self, flow_name: str, name: str) -> dict[str, Any] | None:
        """The deployment ``flow_name/name``, or None when it does not exist."""
        path = f"deployments/name/{_segment(flow_name)}/{_segment(name)}"
        try:
            response = await self._request("GET", path)
        except ApiNotFound:
            return None
        return _as_dict(response.json())

    async def delete_deployment(self, deployment_id: str, *, deployment: str | None = None) -> bool:
        """Delete a deployment; False when it was already gone."""
        try:
            await self._request("DELETE", f"deployments/{deployment_id}", deployment=deployment)
        except ApiNotFound:
            return False
        return True

    async def list_deployments(self, tags_all: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every deployment carrying all of ``tags_all``, each with its ``flow_name``
        (see ``_filtered`` and ``_with_flow_names``), sorted by flow name, then
        deployment name."""
        base: dict[str, Any] = {"tags": {"all_": list(tags_all)}} if tags_all else {}
        return await self._with_flow_names(await self._filtered(base))

    async def find_deployments(
        self, pairs: Collection[tuple[str, str]]
    ) -> dict[str, dict[str, Any]]:
        """Those of the deployments ``pairs`` names (flow name, deployment name) that
        exist, whoever owns them, by ``flow/name``, each with its ``flow_name``.  One
        listing per 200 pairs, filtered on their flows' names and their own."""
        wanted = sorted(set(pairs))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            chunk = wanted[start : start + PAGE_SIZE]
            items = await self._filtered(
                {"name": {"any_": sorted({name for _, name in chunk})}},
                flows={"name": {"any_": sorted({flow for flow, _ in chunk})}},
            )
            keys = {f"{flow}/{name}" for flow, name in chunk}
            for item in await self._with_flow_names(items):
                if (key := f"{item['flow_name']}/{item['name']}") in keys:
                    found[key] = item
        return found

    async def _filtered(
        self, base: Mapping[str, Any], *, flows: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every deployment matching the filter ``base`` (and whose flow matches
        ``flows``).

        The server counts them, then its pages are fetched by offset, ``LIST_CONCURRENCY``
        at a time.  An offset is not a stable cursor: the server sorts on one column,
        whose ties may come back in any order, and a create or delete between two pages
        shifts them.  So when fewer distinct deployments came back than were counted, the
        rest are asked for by excluding the ids already seen, until a page comes back
        short.  Only a create and a delete of matching deployments during the listing
        could still hide one; for this tool's own deployments the environment's lock
        keeps its writes out of that window."""
        joined = {"flows": dict(flows)} if flows else {}
        count = await self._post_json("deployments/count", {"deployments": dict(base), **joined})
        counted = count if isinstance(count, int) and count >= 0 else None
        total = counted or 0
        pages = asyncio.Semaphore(LIST_CONCURRENCY)

        async def page(offset: int) -> list[Any]:
            body = {
                "deployments": dict(base),
                **joined,
                "limit": PAGE_SIZE,
                "offset": offset,
                "sort": "CREATED_DESC",
            }
            async with pages:
                return _as_list(await self._post_json("deployments/filter", body))

        found: dict[str, dict[str, Any]] = {}
        for items in await asyncio.gather(*map(page, range(0, total, PAGE_SIZE))):
            found.update((str(item["id"]), item) for item in items)
        if counted is not None and len(found) >= counted:  # (none counted: none asked for)
            return list(found.values())
        while True:
            flt = dict(base)
            if found:
                flt["id"] = {"not_any_": list(found)}
            body = {"deployments": flt, **joined, "limit": PAGE_SIZE, "sort": "NAME_ASC"}
            items = _as_list(await self._post_json("deployments/filter", body))
            found.update((str(item["id"]), item) for item in items)
            if len(items) < PAGE_SIZE:
                return list(found.values())

    async def _with_flow_names(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """``items`` with their ``flow_name``, sorted by flow name then name.

        A deployment this tool wrote names its flow in the ``LABEL_FLOW`` label, beside
        the flow's id (a flow's name never changes); the others' flows are read, 200 ids
        a call."""
        listed = list(items)
        names: dict[str, str] = {}
        for item in listed:
            if (known := _labelled_flow(item)) is not None:
                names[str(item["flow_id"])] = known
        if unknown := {str(d["flow_id"]) for d in listed} - names.keys():
            names.update(await self._flow_names(unknown))
        for item in listed:
            item["flow_name"] = names.get(str(item["flow_id"]))
        listed.sort(key=lambda d: (str(d["flow_name"]), str(d["name"])))
        return listed

    async def _flow_names(self, flow_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(flow_ids)
        names: dict[str, str] = {}
        for start in range(0, len(ids), PAGE_SIZE):
            chunk = ids[start : start + PAGE_SIZE]
            body = {"flows": {"id": {"any_": chunk}}, "limit": PAGE_SIZE}
            for flow in _as_list(await self._post_json("flows/filter", body)):
                names[str(flow["id"])] = str(flow["name"])
                self._flow_ids.setdefault(str(flow["name"]), str(flow["id"]))
        return names

    # -- automations (a deployment's triggers) ----------------------------------------

    async def automations_owned_by(self, deployment_id: str) -> list[dict[str, Any]]:
        """The automations of deployment ``deployment_id``'s triggers, sorted by name:
        those related to it that run it (the server's answer does not say which
        resource owns an automation, so one made by hand that runs this deployment
        counts too)."""
        resource = f"prefect.deployment.{deployment_id}"
        response = await self._request("GET", f"automations/related-to/{_segment(resource)}")
        owned = [
            a
            for a in _as_list(response.json())
            if a.get("owner_resource", resource) == resource
            and any(
                isinstance(action, Mapping) and str(action.get("deployment_id")) == deployment_id
                for action in a.get("actions") or ()
            )
        ]
        return sorted(owned, key=lambda a: str(a.get("name")))

    async def replace_automations(
        self,
        deployment_id: str,
        automations: Sequence[Mapping[str, Any]],
        *,
        deployment: str | None = None,
    ) -> None:
        """Delete the automations deployment ``deployment_id`` owns, then create
        ``automations`` (each owned by it), as ``prefect deploy`` does."""
        resource = f"prefect.deployment.{deployment_id}"
        await self._request(
            "DELETE", f"automations/owned-by/{_segment(resource)}", deployment=deployment
        )
        for automation in automations:
            await self._request("POST", "automations/", body=automation, deployment=deployment)

    # -- Secret blocks ---------------------------------------------------------------

    async def list_secret_blocks(self, prefix: str) -> list[dict[str, Any]]:
        """The Secret block documents whose names start with ``prefix`` (values left
        out: the server sends them obfuscated), each with ``id`` and ``name``."""
        found: list[dict[str, Any]] = []
        pattern = prefix.replace("%", "").replace("_", "") + "%"
        while True:
            body = {
                "block_documents": {"name": {"like_": pattern}},
                "block_types": {"slug": {"any_": ["secret"]}},
                "include_secrets": False,
                "limit": PAGE_SIZE,
                "offset": len(found),
            }
            page = _as_list(await self._post_json("block_documents/filter", body))
            found += [{"id": b["id"], "name": b["name"]} for b in page if str(b.get("name", "")).startswith(prefix)]
            if len(page) < PAGE_SIZE:
                return found

    async def write_secret_block(
        self, name: str, value: str, *, deployment: str | None = None
    ) -> None:
        """Create the Secret block ``name`` holding ``value``, or replace the value of
        the one that exists.  The value is sent only in the request body."""
        path = f"block_types/slug/secret/block_documents/name/{_segment(name)}?include_secrets=false"
        try:
            existing = _as_dict((await self._request("GET", path)).json())
        except ApiNotFound:
            existing = None
        data = {"value": value}
        if existing is not None:
            body = {"data": data, "merge_existing_data": False}
            await self._request(
                "PATCH", f"block_documents/{existing['id']}", body=body, deployment=deployment
            )
            return
        type_id, schema_id = await self._secret_block_ids()
        body = {
            "name": name,
            "data": data,
            "block_type_id": type_id,
            "block_schema_id": schema_id,
            "is_anonymous": False,
        }
        await self._request("POST", "block_documents/", body=body, deployment=deployment)

    async def delete_block(self, block_id: str) -> bool:
        """Delete a block document; False when it was already gone."""
        try:
            await self._request("DELETE", f"block_documents/{block_id}")
        except ApiNotFound:
            return False
        return True

    async def _secret_block_ids(self) -> tuple[str, str]:
        """The ids of the server's ``secret`` block type and its newest schema."""
        if self._secret_ids is None:
            kind = _as_dict((await self._request("GET", "block_types/slug/secret")).json())
            body = {"block_schemas": {"block_type_id": {"any_": [kind["id"]]}}, "limit": 1}
            schemas = _as_list(await self._post_json("block_schemas/filter", body))
            if not schemas:
                raise ApiNotFound("the server has no schema for its Secret block type")
            self._secret_ids = (str(kind["id"]), str(schemas[0]["id"]))
        return self._secret_ids

    # -- work pools ------------------------------------------------------------------

    async def read_work_pool(self, name: str) -> dict[str, Any] | None:
        """The work pool (with ``type`` and ``base_job_template``), or None when missing."""
        try:
            response = await self._request("GET", f"work_pools/{_segment(name)}")
        except ApiNotFound:
            return None
        return _as_dict(response.json())

    async def list_work_pools(self) -> list[dict[str, Any]]:
        """Every work pool on the server."""
        pools: list[dict[str, Any]] = []
        while True:
            body = {"limit": PAGE_SIZE, "offset": len(pools)}
            page = _as_list(await self._post_json("work_pools/filter", body))
            pools.extend(page)
            if len(page) < PAGE_SIZE:
                return pools

    async def create_work_pool(
        self, name: str, type: str, base_job_template: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create a work pool of ``type`` (``process``, ``docker``, ...).

        Without ``base_job_template`` the type's default is used, read from the server's
        worker metadata (or, failing that, from the copy shipped with Prefect).
        ApiConflict when a pool of that name exists."""
        template = base_job_template
        if template is None:
            template = await self.default_base_job_template(type)
        body = {"name": name, "type": type, "base_job_template": dict(template)}
        return _as_dict(await self._post_json("work_pools/", body))

    async def default_base_job_template(self, type: str) -> dict[str, Any]:
        """The default base job template of a work pool type."""
        try:
            metadata = await self._request("GET", "collections/views/aggregate-worker-metadata")
            template = _find_template(metadata.json(), type)
        except ApiError:
            template = None
        if template is None:  # offline: Prefect's own copy
            template = bundled_job_template(type)
        if template is None:
            raise ApiNotFound(f"no default job template is known for work pool type {type!r}")
        return template

    async def list_workers(self, pool: str) -> list[dict[str, Any]]:
        """The workers that have polled ``pool``; each has ``status`` ONLINE or OFFLINE."""
        path = f"work_pools/{_segment(pool)}/workers/filter"
        return _as_list(await self._post_json(path, {"limit": PAGE_SIZE}))

    async def read_work_queue(self, pool: str, queue: str) -> dict[str, Any] | None:
        """The queue ``queue`` of ``pool``, or None when either is missing."""
        try:
            response = await self._request(
                "GET", f"work_pools/{_segment(pool)}/queues/{_segment(queue)}"
            )
        except ApiNotFound:
            return None
        return _as_dict(response.json())

    # -- flow runs -------------------------------------------------------------------

    async def create_flow_run(
        self,
        deployment_id: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Create a flow run of a deployment, scheduled to start now.

        Without ``idempotency_key`` the request is not repeated once it may have reached
        the server (a repeat could start a second run); with one, the server returns the
        existing run for a repeated key, so it is retried like any other request."""
        body: dict[str, Any] = {"parameters": dict(parameters or {})}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        response = await self._request(
            "POST",
            f"deployments/{deployment_id}/create_flow_run",
            body=body,
            idempotent=idempotency_key is not None,
        )
        return _as_dict(response.json())

    async def read_flow_run(self, flow_run_id: str) -> dict[str, Any]:
        """The flow run with this id, with its current ``state``."""
        response = await self._request("GET", f"flow_runs/{flow_run_id}")
        return _as_dict(response.json())

    async def wait_flow_run(
        self,
        flow_run_id: str,
        timeout: float,
        *,
        poll: float = 1.0,
        on_state: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the run reaches a final state (Completed, Failed, Cancelled,
        Crashed) and return that state; ``on_state`` hears each new state's name as it
        is seen.  ``RunTimedOut`` when ``timeout`` seconds pass first."""
        end = time.monotonic() + timeout
        seen = None
        while True:
            run = await self.read_flow_run(flow_run_id)
            state = _as_dict(run.get("state") or {})
            if on_state is not None and state.get("name") and state.get("name") != seen:
                seen = state.get("name")
                on_state(str(seen))
            if state.get("type") in TERMINAL_STATES:
                return state
            if time.monotonic() >= end:
                raise RunTimedOut(
                    f"flow run {run.get('name')!r} ({flow_run_id}) did not finish within "
                    f"{timeout:g} s; its state is still {state.get('name') or 'unknown'} "
                    "(is a worker running for its work pool?)",
                    flow_run_id=flow_run_id,
                    state=str(state.get("type") or ""),
                )
            await asyncio.sleep(min(poll, max(0.0, end - time.monotonic())))

    async def cancel_flow_run(self, flow_run_id: str, *, running: bool) -> None:
        """Cancel a flow run: at once when it has not started, through its worker
        (Cancelling) when it runs."""
        state = {"type": "CANCELLING", "name": "Cancelling"} if running else {
            "type": "CANCELLED", "name": "Cancelled", "message": "cancelled by invoke run"
        }
        await self._request(
            "POST", f"flow_runs/{flow_run_id}/set_state", body={"state": state, "force": True}
        )

    # -- transport -------------------------------------------------------------------

    async def _post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        return (await self._request("POST", path, body=body)).json()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
        retry: bool = True,
        deployment: str | None = None,
    ) -> httpx.Response:
        """Send one request with bounded retries; return a 2xx response or raise ApiError
        (a 3xx too: redirects are never followed)."""
        url = f"{self.url}/{path}"
        content = None if body is None else json.dumps(body, default=_json_default)
        headers = {"Content-Type": "application/json"} if content is not None else None
        started = time.monotonic()
        attempt = 0
        stale_left = _STALE_RETRIES if retry and idempotent else 0
        while True:
            attempt += 1
            self.request_count += 1
            write = _is_write(method, path)
            self.write_count += write
            try:
                if write and self._write_gate is not None:
                    async with self._write_gate:
                        response = await self._attempt(method, path, content, headers)
                else:
                    response = await self._attempt(method, path, content, headers)
            except httpx.TransportError as exc:
                with contextlib.suppress(RuntimeError):  # which replica it was sent to
                    url = str(exc.request.url)
                if (permanent := _permanent(exc, url)) is not None:
                    # Retrying cannot help: fail at once, with the right advice.
                    kind, message = permanent
                    raise kind(self._scrub(message), url=url, deployment=deployment) from exc
                if isinstance(exc, _STALE) and stale_left > 0:
                    stale_left -= 1
                    attempt -= 1
                    continue
                may = retry and (idempotent or isinstance(exc, _NOT_SENT))
                delay = self._delay(attempt)
                if may and self._may_retry(attempt, started, delay):
                    await asyncio.sleep(delay)
                    continue
                raise ApiUnreachable(
                    self._scrub(_describe_transport_error(exc, attempt)),
                    url=url,
                    deployment=deployment,
                ) from exc
            url = str(response.request.url) if len(self.urls) > 1 else url
            status = response.status_code
            if status == 429 or status >= 500:
                self.busy_count += 1
                # 429 means the server refused before doing anything: safe to repeat.
                may = retry and (idempotent or status == 429)
                delay = self._delay(attempt, response.headers.get("Retry-After"))
                if may and self._may_retry(attempt, started, delay):
                    await asyncio.sleep(delay)
                    continue
                detail = _detail(response)
                tries = f" after {attempt} attempt{'s' if attempt > 1 else ''}"
                raise ApiServerError(
                    self._scrub(f"{detail}{tries}"), url=url, status=status, deployment=deployment
                )
            if 300 <= status < 400:
                # Never followed: a redirect may lead to another host (with our API key),
                # or to a login page; and a DELETE answered 3xx did not delete anything.
                where = response.headers.get("Location") or "nowhere it says"
                raise ApiError(
                    self._scrub(
                        f"the server at {self.url} answered HTTP {status}, redirecting to "
                        f"{where}; redirects are not followed: point api_url at the Prefect "
                        "API itself"
                    ),
                    url=url,
                    status=status,
                    deployment=deployment,
                )
            if status >= 400:
                error = _ERRORS.get(status, ApiError)
                raise error(
                    self._scrub(_detail(response)), url=url, status=status, deployment=deployment
                )
            kind = response.headers.get("content-type", "")
            if response.content and "json" not in kind.lower():
                # A login page, a proxy's welcome page, a web server at the wrong path.
                raise ApiError(
                    self._scrub(
                        f"the server at {self.url} did not answer with Prefect API JSON "
                        f"(got {kind or 'no content type'}: "
                        f"{response.text[:60].strip()!r}); check api_url"
                    ),
                    url=url,
                    status=status,
                    deployment=deployment,
                )
            return response

    async def _attempt(
        self, method: str, path: str, content: str | None, headers: dict[str, str] | None
    ) -> httpx.Response:
        """One request, never longer than ``timeout`` seconds in all.  httpx bounds each
        connect, read and write on its own, so a server (or proxy) that trickles bytes
        could otherwise hold one attempt, and an unattended run, without end."""
        try:
            return await asyncio.wait_for(
                self._next_client().request(method, path, content=content, headers=headers),
                self.timeout,
            )
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout(f"no complete answer within {self.timeout:g} s") from exc

    def _next_client(self) -> httpx.AsyncClient:
        """The client of the next API process in turn (the only one without replicas);
        a retry after a failure so goes to another replica."""
        index = self._turn % len(self._clients)
        self._turn += 1
        self.requests_by_url[self.urls[index]] += 1
        return self._clients[index]

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Pause before attempt ``attempt + 1``: exponential with jitter, capped."""
        if retry_after is not None:
            seconds = _parse_retry_after(retry_after)
            if seconds is not None:
                return min(self.backoff_cap, seconds)
        ceiling = min(self.backoff_cap, self.backoff * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _may_retry(self, attempt: int, started: float, delay: float) -> bool:
        return attempt <= self.retries and time.monotonic() - started + delay < self.deadline

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "****") if len(self._api_key) >= 4 else text


def health(url: str, timeout: float = 2.0) -> bool:
    """True when the Prefect API at ``url`` answers ``GET /health`` with ``true``.

    One quick attempt, no retries: made for polling a server that is starting."""
    try:
        response = _quick_get(url, "health", timeout)
    except httpx.HTTPError:
        return False
    try:
        return response.status_code == 200 and response.json() is True
    except ValueError:
        return False


def _quick_get(url: str, path: str, timeout: float) -> httpx.Response:
    """One GET of ``<url>/<path>``, no retries; no proxy for loopback, no TLS context
    for plain http."""
    return httpx.get(
        f"{url.rstrip('/')}/{path}",
        timeout=timeout,
        trust_env=not _is_loopback(url),
        verify=_tls_verify(url),
    )


class Probe:
    """The quick GETs ``server.LocalServer`` polls a starting server with."""

    def health(self, url: str, timeout: float = 2.0) -> bool:
        return health(url, timeout)

    def home(self, url: str) -> str | None:
        return server_home(url)


def server_home(url: str, timeout: float = 5.0) -> str | None:
    """The ``PREFECT_HOME`` a Prefect server at ``url`` reports (``GET /admin/settings``),
    or None when it cannot say; tells one local server from another on the same port."""
    try:
        response = _quick_get(url, "admin/settings", timeout)
        home = response.json().get("home") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return home if isinstance(home, str) else None


async def work_pools_report(
    api: PrefectApi, pools: Mapping[str, str], *, create: bool = False
) -> list[dict[str, Any]]:
    """Check the work pools an environment needs; with ``create``, make the missing ones.

    ``pools`` maps a deployment type (``python``, ``docker``, ``kubernetes``, ...) to a
    pool name; a missing pool is created with its type's default base job template.  Returns
    one row per type: ``deployment_type``, ``name``, ``expected_type``, ``exists``,
    ``type`` (None when missing), ``type_ok``, ``created`` and ``workers_online``."""
    rows: list[dict[str, Any]] = []
    for deployment_type, name in pools.items():
        expected = pool_type(deployment_type)
        pool = await api.read_work_pool(name)
        created = False
        if pool is None and create:
            pool = await api.create_work_pool(name, expected)
            created = True
        online = 0
        found_type = None
        if pool is not None:
            found_type = pool.get("type")
            workers = await api.list_workers(name)
            online = sum(1 for w in workers if w.get("status") == "ONLINE")
        rows.append(
            {
                "deployment_type": deployment_type,
                "name": name,
                "expected_type": expected,
                "exists": pool is not None,
                "type": found_type,
                "type_ok": found_type == expected,
                "created": created,
                "workers_online": online,
            }
        )
    return rows


# -- helpers -------------------------------------------------------------------------


def _tls_verify(url: str, ca_bundle: str = "") -> bool | ssl.SSLContext:
    """Verify certificates for https; for plain http there is no TLS, and not building
    an SSL context (certifi's bundle) saves about 50 ms per client, three times a run.
    A corporate CA's bundle is honoured: the ``ca_bundle`` setting first, else
    ``SSL_CERT_FILE`` or ``REQUESTS_CA_BUNDLE``."""
    if url.lower().startswith("http://"):
        return False
    for bundle in (ca_bundle, os.environ.get("SSL_CERT_FILE", ""), os.environ.get("REQUESTS_CA_BUNDLE", "")):
        if bundle and Path(bundle).is_file():
            return ssl.create_default_context(cafile=bundle)
    return True


def _is_loopback(url: str) -> bool:
    """True for a URL on this machine; HTTP(S)_PROXY from the environment must not
    capture those (a build box behind a proxy still reaches its local server)."""
    host = httpx.URL(url).host
    return host in ("localhost", "::1") or host.startswith("127.")


def _segment(value: str) -> str:
    """Quote a name for use as one URL path segment."""
    return quote(value, safe="")


def _is_write(method: str, path: str) -> bool:
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (method == "POST" and path.rstrip("/").endswith(_READ_SUFFIXES))


def _id_of(response: httpx.Response) -> str:
    """The ``id`` of the object a write answered with; ApiError when there is none."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data.get("id"):
        raise ApiError(
            f"the server answered {response.request.method} {response.request.url} with no "
            "object id: is api_url a Prefect API?",
            url=str(response.request.url),
            status=response.status_code,
        )
    return str(data["id"])


def _as_dict(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(f"expected a JSON object from the server, got {type(data).__name__}")
    return data


def _labelled_flow(item: Mapping[str, Any]) -> str | None:
    """The flow name ``item``'s ``LABEL_FLOW`` records, when it was recorded for the
    flow ``item`` belongs to; else None."""
    labels = item.get("labels")
    value = labels.get(LABEL_FLOW) if isinstance(labels, Mapping) else None
    if not isinstance(value, str):
        return None
    flow_id, _, name = value.partition("/")
    return name if name and flow_id == str(item.get("flow_id")) else None


def _as_list(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise ApiError(f"expected a JSON list from the server, got {type(data).__name__}")
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot send a {type(value).__name__} to the Prefect API as JSON")


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


# What a connection failure says when the name does not resolve at all, and when the
# server's certificate is not trusted: neither is transient.
_UNKNOWN_HOST = ("name or service not known", "nodename nor servname", "no address associated")
_BAD_CERTIFICATE = ("certificate_verify_failed", "certificate verify failed")


def _permanent(exc: httpx.TransportError, url: str) -> tuple[type[ApiError], str] | None:
    """The error and why ``exc`` will not go away by retrying; None when it may."""
    text = str(exc).lower()
    host = httpx.URL(url).host
    if any(words in text for words in _UNKNOWN_HOST):
        return ApiHostUnknown, (
            f"the host {host!r} of api_url does not resolve (no such name in DNS): check "
            "api_url for a typo, or the machine's DNS"
        )
    if any(words in text for words in _BAD_CERTIFICATE):
        return ApiCertificateError, (
            f"the TLS certificate of {host!r} is not trusted ({exc}); behind a corporate CA "
            "set ca_bundle (or SSL_CERT_FILE / REQUESTS_CA_BUNDLE) to its bundle"
        )
    return None


def _describe_transport_error(exc: httpx.TransportError, attempts: int) -> str:
    if isinstance(exc, httpx.TimeoutException):
        what = f"no answer in time ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        what = f"cannot connect ({exc or 'connection failed'})"
    else:
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{what} after {attempts} attempt{'s' if attempts > 1 else ''}"


def _detail(response: httpx.Response) -> str:
    """The server's explanation of an error response, readable on one line."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] if text else response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        if "exception_detail" in data:
            return _format_detail(data["exception_detail"])
        if "detail" in data:
            return _format_detail(data["detail"])
        if "exception_message" in data:
            return str(data["exception_message"])
    return _format_detail(data)


def _format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(_format_detail(item) for item in detail) or "(no detail)"
    if isinstance(detail, dict) and "msg" in detail:
        loc = ".".join(str(part) for part in detail.get("loc", ()) if part != "body")
        text = f"{loc}: {detail['msg']}" if loc else str(detail["msg"])
        value = detail.get("input")
        if isinstance(value, (str, int, float, bool)) and detail.get("type") != "missing":
            shown = repr(value)
            text += f" (got {shown[:80]}{'...' if len(shown) > 80 else ''})"
        return text
    if isinstance(detail, str):
        return detail
    return json.dumps(detail)[:500]


def _find_template(metadata: Any, type: str) -> dict[str, Any] | None:
    if not isinstance(metadata, dict):
        return None
    for collection in metadata.values():
        if not isinstance(collection, dict):
            continue
        for worker in collection.values():
            if isinstance(worker, dict) and worker.get("type") == type:
                template = worker.get("default_base_job_configuration")
                if isinstance(template, dict):
                    return template
    return None


@cache
def _bundled_templates() -> dict[str, dict[str, Any]]:
    spec = importlib.util.find_spec("prefect")  # finds the package without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location, "server", "api", "collections_data", "views")
        candidate = path / "aggregate-worker-metadata.json"
        if candidate.is_file():
            metadata = json.loads(candidate.read_text(encoding="utf-8"))
            return {
                str(worker["type"]): worker["default_base_job_configuration"]
                for collection in metadata.values()
                if isinstance(collection, dict)
                for worker in collection.values()
                if isinstance(worker, dict) and "default_base_job_configuration" in worker
            }
    return {}


def bundled_job_templates() -> dict[str, dict[str, Any]]:
    """Every work pool type's default base job template that ships with Prefect, by
    type (``process``, ``docker``, ``kubernetes``, ``ecs``, ...).  Read once; callers
    must not change what they get."""
    return _bundled_templates()


def bundled_job_template(pool_type: str) -> dict[str, Any] | None:
    """The default base job template of work pool type ``pool_type`` (``process``,
    ``docker``) from the worker metadata that ships with Prefect, read as JSON without
    importing Prefect; None when Prefect or the type is unknown."""
    template = _bundled_templates().get(pool_type)
    return json.loads(json.dumps(template)) if template is not None else None
