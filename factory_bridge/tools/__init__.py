"""What operators and developers run by hand, never the web or the workers: the AWS resources
applied through the API (`provision_aws`) or written as a CloudFormation template
(`aws_template`), both from the declaration in factory_bridge/infrastructure.py, and the legacy
factory simulator (`run_factory`). Nothing outside this package and the management commands
imports it (tests/test_runtime_imports.py).
"""
