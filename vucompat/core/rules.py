"""Which request a new port gets, and which rule decided it. Pure: values in, a
Resolution out (core.resolve), carrying the rule and what it read.

In order of priority:
1. explicit: the Interface's options:vhost-compat;
2. follows-source: the port's Neutron port (external_ids:iface-id) already has a
   mode elsewhere (the source of a live migration, which plugs the same Neutron port
   on the destination): the same mode, found by the shell in the fleet database or in
   a source registry the orchestrator named (Incoming_Port). Fail closed: when this
   host cannot run that mode, or nobody can tell, the port is rejected;
3. host-default: the host's default policy (Host.default_policy).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vucompat.core.modeset import Host
from vucompat.core.portview import InterfaceView
from vucompat.core.resolve import (APPLIED, EXPLICIT, FOLLOWS_SOURCE, HOST_DEFAULT, LATEST, PASSTHROUGH, RECOMMENDED,
                                   REJECTED, Resolution, resolve)

#: the default policy that takes the pool's mode from the fleet
POOL = "pool"
#: the policies besides a pinned mode name
POLICIES = (LATEST, RECOMMENDED, PASSTHROUGH, POOL)


@dataclass(frozen=True)
class SourceMode:
    """The mode an iface-id's port has on another host."""

    #: the mode's name there
    mode: str
    #: its digest there (None when the source did not say)
    digest: str | None
    #: where it was found, for the record (e.g. "host compute-a, in the fleet")
    where: str


@dataclass(frozen=True)
class SourceUnknown:
    """Whether an iface-id has a mode elsewhere could not be found out (the fleet did
    not answer, or its hosts disagree)."""

    reason: str


Source = SourceMode | SourceUnknown


@dataclass(frozen=True)
class DefaultPolicy:
    """The host's default policy, as the shell read it: what a port plugged without
    an option asks for."""

    #: as configured: latest, recommended, passthrough, pool, or a mode name
    policy: str = LATEST
    #: the request it stands for now (a pool's mode name for `pool`); None: see error
    request: str | None = LATEST
    #: why the policy gives no request now (e.g. the fleet did not answer)
    error: str | None = None
    #: what the policy read (e.g. "the newest mode the 3 hosts of pool A run")
    detail: str | None = None

    def describe(self) -> str:
        return f"policy {self.policy}" + (f": {self.detail}" if self.detail else "")


def decide(iface: InterfaceView, host: Host, source: Source | None = None,
           default: DefaultPolicy = DefaultPolicy()) -> Resolution:
    """The resolution of a new port on `host`: by the first rule that applies (see the
    module), with the rule and what it read recorded in it. `source`: what the shell
    found for the Interface's iface-id (None: nothing, or it has none)."""
    if iface.explicit_request is not None:
        return replace(resolve(iface.explicit_request, host, iface.type), rule=EXPLICIT)
    if source is not None and iface.iface_id:
        return follow(iface.iface_id, iface.type, host, source)
    if default.request is None:
        return Resolution(default.policy, None, REJECTED, f"the host's default {default.describe()} gives no mode: "
                          f"{default.error}", HOST_DEFAULT, default.describe())
    resolution = resolve(default.request, host, iface.type)
    return replace(resolution, requested=default.request, rule=HOST_DEFAULT, rule_detail=default.describe())


def follow(iface_id: str, port_type: str | None, host: Host, source: Source) -> Resolution:
    """The source's mode for the port of `iface_id` (of `port_type`; None: any) on
    `host`, or a rejection saying why not: the mode must be defined here with the
    same digest, and runnable."""
    if isinstance(source, SourceUnknown):
        detail = f"iface-id {iface_id}: unknown"
        return Resolution(FOLLOWS_SOURCE, None, REJECTED, f"cannot tell whether iface-id {iface_id} has a mode on "
                          f"another host ({source.reason}): rejected until it can be told (fail closed), or set "
                          f"options:vhost-compat", FOLLOWS_SOURCE, detail)
    detail = f"iface-id {iface_id}: {source.mode} on {source.where}"
    resolution = resolve(source.mode, host, port_type)
    if resolution.state == APPLIED and resolution.mode is not None and source.digest \
            and resolution.mode.digest != source.digest:
        resolution = Resolution(source.mode, None, REJECTED, f"{source.mode} is {source.digest} on {source.where} "
                                f"and {resolution.mode.digest} here: the two hosts define it differently (load the "
                                f"same tables on both)")
    if resolution.state == REJECTED:
        resolution = replace(resolution, error=f"the port follows iface-id {iface_id}'s mode on {source.where}, "
                             f"{source.mode}: {resolution.error}")
    return replace(resolution, requested=source.mode, rule=FOLLOWS_SOURCE, rule_detail=detail)


def check_policy(policy: str, host: Host) -> str | None:
    """Why `policy` cannot be a default policy of `host` (None when it can): one of
    POLICIES, or a mode the host defines and can run."""
    policy = policy.strip()
    if policy in POLICIES:
        return None
    resolution = resolve(policy, host)
    return resolution.error
