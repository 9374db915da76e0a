"""The `aivc` command-line client of the AIVC Portal. It speaks only the portal's JSON API."""
