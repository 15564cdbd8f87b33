from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from loyalty import views as loyalty_views
from recommendations import urls as desk_urls

# Each app adds its endpoints here.
api_patterns: list = []
api_patterns += desk_urls.api_urlpatterns

urlpatterns = [
    # The home page is the review queue (URL name "home").
    path("", include(desk_urls.urlpatterns)),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", loyalty_views.healthz, name="healthz"),
    path("api/", include(api_patterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
