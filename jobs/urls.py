from django.urls import path

from jobs import views

urlpatterns = [
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/new/", views.job_new, name="job-new"),
    path("jobs/new/upload/", views.job_upload, name="job-upload"),
    path("jobs/<int:pk>/", views.job_detail, name="job-detail"),
    path("jobs/<int:pk>/log/", views.job_log_tail, name="job-log-tail"),
    path("jobs/<int:pk>/log/download/", views.job_log_download, name="job-log-download"),
    path("jobs/<int:pk>/outputs.zip", views.job_outputs_zip, name="job-outputs-zip"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("jobs/<int:pk>/hold/", views.job_hold_view, name="job-hold"),
    path("jobs/<int:pk>/release/", views.job_release_view, name="job-release"),
]
