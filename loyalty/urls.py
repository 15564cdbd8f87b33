from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from governance import privacy_urls
from governance import urls as governance_urls
from loyalty import api as loyalty_api
from loyalty import views as loyalty_views
from recommendations import urls as desk_urls

handler404 = "loyalty.api_errors.not_found"

# Each app adds its endpoints here.
api_patterns: list = [
    path("imports/<str:kind>/", loyalty_api.ImportUploadView.as_view(), name="api-import"),
    path("offers/", loyalty_api.OfferListView.as_view(), name="api-offers"),
    path("offers/<str:code>/", loyalty_api.OfferDetailView.as_view(), name="api-offer"),
    *desk_urls.api_urlpatterns,
    *governance_urls.api_urlpatterns,
    *privacy_urls.api_urlpatterns,
]

urlpatterns = [
    # The home page is the review queue (URL name "home").
    path("", include(desk_urls.urlpatterns)),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", loyalty_views.healthz, name="healthz"),
    path("offers/", loyalty_views.offers, name="offers"),
    path("offers/new/", loyalty_views.offer_edit, name="offer-new"),
    path("offers/<str:code>/edit/", loyalty_views.offer_edit, name="offer-edit"),
    path("governance/", include(governance_urls.urlpatterns)),
    path("", include(privacy_urls.urlpatterns)),
    path("api/", include(api_patterns)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
