from typing import Any

from django import forms
from django.contrib import messages
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from loyalty.models import Offer
from loyalty.permissions import capability_required
from loyalty.selectors import offer_get, offer_list
from loyalty.services import offer_upsert


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: answers without login and reveals nothing but ok."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


class OfferForm(forms.ModelForm):
    class Meta:
        model = Offer
        fields = ["code", "name", "kind", "cost", "value", "active", "high_stakes"]

    def __init__(self, *args: Any, editing: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editing:
            del self.fields["code"]  # the code is the offer's identity: never renamed here
        self.fields["cost"].min_value = 0
        self.fields["cost"].widget.attrs["min"] = "0"


@capability_required("manage_offers")
def offers(request: HttpRequest) -> HttpResponse:
    return render(request, "loyalty/offers.html", {"offers": offer_list()})


@capability_required("manage_offers")
def offer_edit(request: HttpRequest, code: str | None = None) -> HttpResponse:
    offer = None
    if code is not None:
        offer = offer_get(code=code)
        if offer is None:
            raise Http404("No such offer.")
    form = OfferForm(request.POST or None, instance=offer, editing=offer is not None)
    if request.method == "POST" and form.is_valid():
        fields = {k: v for k, v in form.cleaned_data.items() if k != "code"}
        saved, created = offer_upsert(code=code or form.cleaned_data["code"], fields=fields, actor=request.user)
        messages.success(request, f"Offer {saved.code} {'created' if created else 'saved'}.")
        return redirect("offers")
    return render(request, "loyalty/offers_form.html", {"form": form, "offer": offer})
