"""A Python process that cannot import detrvilt, for the tests that load saved folders as a user without it would.

The process runs this interpreter with ``-I -S``: no site hooks (so the editable install's finder is never installed),
no current folder and no PYTHON* variables on the path; only the site-packages folders are added back. The script
prints ``REPORT`` followed by a JSON object, which `run_without_detrvilt` returns.
"""

import json
import site
import subprocess
import sys
import textwrap

# Every clean script starts with this: proof that detrvilt is out of reach.
PROLOGUE = textwrap.dedent("""
    import importlib.util, json, sys
    report = {"detrvilt_spec": importlib.util.find_spec("detrvilt") is not None}
    try:
        import detrvilt
        report["import_detrvilt"] = "succeeded"
    except ImportError:
        report["import_detrvilt"] = "ImportError"
""")
# ... and ends with this.
EPILOGUE = textwrap.dedent("""
    report["detrvilt_modules"] = sorted(m for m in sys.modules if m.startswith("detrvilt"))
    print("REPORT" + json.dumps(report))
""")


def run_without_detrvilt(script: str, args, cwd, timeout: int = 240) -> dict:
    """Run `PROLOGUE + script + EPILOGUE` (the script fills the dict `report`) and return the report, after checking
    that the process could not import detrvilt."""
    site_dirs = [d for d in site.getsitepackages() if "site-packages" in d]
    bootstrap = f"import sys; sys.path.extend({site_dirs!r}); exec(compile(sys.argv.pop(1), 'clean', 'exec'))"
    env = {"HF_HOME": str(cwd / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    code = PROLOGUE + textwrap.dedent(script) + EPILOGUE
    result = subprocess.run([sys.executable, "-I", "-S", "-c", bootstrap, code, *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    assert report["detrvilt_spec"] is False and report["import_detrvilt"] == "ImportError", report
    assert report["detrvilt_modules"] == [], report["detrvilt_modules"]
    return report
