"""Call accounting: tariffs and rating, prepaid balances, SMDR, reports and exports.

See docs/accounting.md. Nothing here runs on the telephony core's event loop except the
thin SMDR and scheduler shells; pricing runs in the CDR writer thread, reports in the CLI.
"""
