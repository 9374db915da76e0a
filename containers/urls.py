from django.urls import path

from containers import file_views

urlpatterns = [
    path("files/", file_views.files_home, name="files"),
    path("files/<int:host_id>/", file_views.files_browse, name="files-browse"),
    path("files/<int:host_id>/download/", file_views.files_download, name="files-download"),
    path("files/<int:host_id>/zip/", file_views.files_zip, name="files-zip"),
    path("files/<int:host_id>/upload/", file_views.files_upload, name="files-upload"),
]
