from django.urls import path

from bookings import report_views, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("reports/", report_views.reports, name="reports"),
    path("reports/reservations.csv", report_views.reservations_csv, name="report-reservations-csv"),
    path("reports/usage.csv", report_views.usage_csv, name="report-usage-csv"),
]
