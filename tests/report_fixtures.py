"""A user's method for tests/test_report.py's --compare case: sCD under another name, reached from a recipe as
`method: report_fixtures:FastCM` (a module:Class path; pytest puts tests/ on the Python path)."""
from scm.methods import SCD


class FastCM(SCD):
    name = "fastcm"
    label = "fastcm"
