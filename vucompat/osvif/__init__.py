"""The optional os-vif plugin `ovs_vucompat` (extra `vucompat[osvif]`).

Nothing here is imported by `import vucompat`: os-vif loads `vucompat.osvif.plugin`
through its `os_vif` entry point when it initializes. See docs/nova-integration.md.
"""
