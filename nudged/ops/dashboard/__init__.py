"""The staff dashboard at /admin/dashboard/: the last hour or day of the shop, in charts."""
