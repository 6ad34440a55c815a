"""The default warning rule pack (``default.yaml``) and its unit tests, shipped with the package.

A working directory's own ``rules/default.yaml`` takes precedence (see
``service.cli.warnings.default_rules_path``); this copy is what an installed quotacast falls
back to.
"""
