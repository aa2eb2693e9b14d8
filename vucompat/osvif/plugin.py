"""`ovs_vucompat`: os-vif's OVS plugin, plus what a deployment can say about a
vhost-user port's compat mode when it plugs it (extra `vucompat[osvif]`).

It is vif_plug_ovs's OvsPlugin for everything, with two additions for VIFVHostUser,
from its config group `[os_vif_ovs_vucompat]` (which also takes every `[os_vif_ovs]`
option, ovsdb_connection first):

- `vhost_compat_mode`: a mode written as `options:vhost-compat` in the transaction
  that creates the port, so the agent resolves it as an explicit request (never the
  host default first). A re-plug of an existing port (nova-compute restart, hard
  reboot) leaves the option as it is: a port's mode never changes while it lives.
- `hold_for_agent` (default true): a mode "server" VIF (QEMU serves vif.path; a
  dpdkvhostuserclient port) is created *held*: without `options:vhost-server-path`,
  with `external_ids:vhost-compat-frontend-path=<vif.path>`. ovs-vswitchd does not
  connect a dpdkvhostuserclient port that has no path, so the agent sets the path
  once, to its relay (or to the frontend's path when it does not enforce), and OVS's
  first connection goes through the relay. A re-plug keeps the path the agent set
  (os-vif's db_set merges options), where the stock plugin writes vif.path back.

Nova hard-codes `plugin="ovs"` for vhost-user VIFs, so it never asks for this plugin:
with unmodified Nova the agent decides from `external_ids:iface-id` (see
docs/nova-integration.md). This is for orchestrators that choose the os-vif plugin.
`import vucompat` never imports this module; os-vif loads it through its `os_vif`
entry point when it initializes.
"""

from __future__ import annotations

from typing import Any

from oslo_config import cfg
from os_vif import objects
from vif_plug_ovs import constants
from vif_plug_ovs.ovs import OvsPlugin

from vucompat.core.portview import FRONTEND_PATH, OPTION

#: the entry point's name, and so the config group's: [os_vif_ovs_vucompat]
PLUGIN_NAME = "ovs_vucompat"


class VucompatOvsPlugin(OvsPlugin):
    """OvsPlugin with an explicit compat mode and the held plug form (module doc)."""

    CONFIG_OPTS = list(OvsPlugin.CONFIG_OPTS) + [
        cfg.StrOpt("vhost_compat_mode",
                   help="The compat mode of the vhost-user ports this host plugs (options:vhost-compat): "
                        "a mode name, latest, recommended or passthrough. Unset: the port carries no "
                        "request and the vucompat agent applies its host policy."),
        cfg.BoolOpt("hold_for_agent", default=True,
                    help="Create mode 'server' vhost-user ports (dpdkvhostuserclient) without "
                         "options:vhost-server-path and with external_ids:vhost-compat-frontend-path, "
                         "so ovs-vswitchd connects only once the vucompat agent has set the path "
                         "(to its masking relay). Needs a vucompat agent on the host: without one such "
                         "a port never connects."),
    ]

    def describe(self) -> objects.host_info.HostPluginInfo:
        info = super().describe()
        info.plugin_name = PLUGIN_NAME
        return info

    def _plug_vhostuser(self, vif: objects.vif.VIFVHostUser, instance_info: objects.InstanceInfo) -> None:
        name = OvsPlugin.gen_port_name(constants.OVS_VHOSTUSER_PREFIX, vif.id)
        network = self._get_vif_network(vif)
        bridge = network.bridge
        held = vif.mode != "client" and bool(self.config.hold_for_agent)
        mode = (self.config.vhost_compat_mode or "").strip()
        exists = self.ovsdb.port_exists(name, bridge)
        options: dict[str, str] = {OPTION: mode} if mode and not exists else {}
        ids: dict[str, str] = {FRONTEND_PATH: vif.path} if held else {}
        # one transaction: ovsdbapp merges the stock plugin's (nested) transaction into
        # this one, so the Interface appears with its request and its hold already set
        with self.ovsdb.ovsdb.transaction(check_error=True) as txn:
            if held:
                self._create_vif_port(vif, name, instance_info,
                                      interface_type=constants.OVS_VHOSTUSER_CLIENT_INTERFACE_TYPE,
                                      datapath_type=self._get_vif_datapath_type(
                                          vif, datapath=constants.OVS_DATAPATH_NETDEV))
            else:
                super()._plug_vhostuser(vif, instance_info)
            columns: list[tuple[str, Any]] = []
            if options:
                columns.append(("options", options))
            if ids:
                columns.append(("external_ids", ids))
            if columns:
                txn.add(self.ovsdb.ovsdb.db_set("Interface", name, *columns))
