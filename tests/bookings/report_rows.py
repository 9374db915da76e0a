"""Reading the usage report's rows in tests."""

from bookings.reports import RESERVATION_COLUMNS


def named(row: list) -> dict:
    """A reservations-CSV row as {column: cell}."""
    return dict(zip(RESERVATION_COLUMNS, row, strict=True))
