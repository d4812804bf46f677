import mirror


def test_public_names_are_exactly_these():
    assert sorted(mirror.__all__) == sorted([
        "AccessDenied", "AwsSettings", "ContentNotFound", "DestinationBusy", "DiskError", "EulaRequired", "ExitCode", "HubError",
        "MirrorError", "StudioUrlSettings", "SyncResult", "SyncSettings", "UnsafeLocalPath",
        "UsageError", "VerifyFailed", "VerifyReport", "__version__", "sync", "sync_blocking", "verify",
    ])
    for name in mirror.__all__:
        assert hasattr(mirror, name), name


def test_the_core_never_imports_rich_or_argparse():
    import ast
    from pathlib import Path

    package = Path(mirror.__file__).parent
    for module in package.rglob("*.py"):
        if module.name in ("cli.py", "progress.py"):
            continue
        tree = ast.parse(module.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"rich", "argparse"}, module
