from django.urls import path

from bookings import calendar_views, report_views, views, waitlist_views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("reservations/new/", views.reservation_new, name="reservation-new"),
    path("reservations/capacity/", views.reservation_capacity, name="reservation-capacity"),
    path("reservations/<int:pk>/", views.reservation_detail, name="reservation-detail"),
    path("reservations/<int:pk>/cancel/", views.reservation_cancel_view, name="reservation-cancel"),
    path("reservations/<int:pk>/release/", views.reservation_release_view, name="reservation-release"),
    path("reservations/<int:pk>/extend/", views.reservation_extend_view, name="reservation-extend"),
    path("reservations/<int:pk>/restart/", views.reservation_restart_view, name="reservation-restart"),
    path("reservations/<int:pk>/status/", views.reservation_status, name="reservation-status"),
    path("timeline/", views.timeline, name="timeline"),
    path("waitlist/", waitlist_views.waitlist, name="waitlist"),
    path("waitlist/new/", waitlist_views.waitlist_join_view, name="waitlist-join"),
    path("waitlist/<int:pk>/withdraw/", waitlist_views.waitlist_withdraw_view, name="waitlist-withdraw"),
    path("reports/", report_views.reports, name="reports"),
    path("reports/reservations.csv", report_views.reservations_csv, name="report-reservations-csv"),
    path("reports/usage.csv", report_views.usage_csv, name="report-usage-csv"),
    path("usage/", report_views.usage, name="usage"),
    path("usage/<slug:chart>.csv", report_views.usage_chart_csv, name="usage-chart-csv"),
    path("calendar/<str:token>.ics", calendar_views.calendar_feed, name="calendar-feed"),
]
