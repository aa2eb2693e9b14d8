"""The OVSDB layer: every byte vucompat sends to an ovsdb-server goes through here.

- schema.py: the registry database's name, schema file and the columns vucompat uses
- rpc.py: one JSON-RPC call with a deadline (schema fetch, raw reads and writes), clear errors
- session.py: a persistent JSON-RPC session along several remotes (the fleet)
- tls.py: the SSL files of ssl: remotes (the ovs library keeps them per process)
- codec.py: OVSDB JSON values <-> Python values, by the column's type
- connection.py: an IDL connection with deadlines and one-transaction-per-action
- rows.py: Compat_Mode/Host rows <-> core values
- registry.py: read a host from its database (a warm client for long-lived callers);
  write its Host row (a load's, a probe's)
- load.py: `vucompat load` as one checked transaction
- vswitch.py: one-shot reads of the Open_vSwitch database (versions, settings, bridges)
- admin.py: create, attach and upgrade the database (ovsdb-tool, ovsdb-client, ovs-appctl)
- the fleet database: fleet_rows.py (records <-> rows, pure), fleet_config.py (listeners,
  RBAC roles), fleet_publish.py (a host's publish, the agent's publisher thread),
  fleet_read.py (schedulers' reads, FleetView), cluster.py (create, join, status)
- fastjson.py: a faster JSON parser for the ovs library, installed by whatever opens
  a connection (rpc.connect, connection.Connection): importing this package changes
  nothing in the ovs library
"""
