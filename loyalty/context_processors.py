from django.http import HttpRequest

from loyalty.roles import CAPABILITIES, has_capability


def roles(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"can": {}}
    return {"can": {name: has_capability(user, name) for name in CAPABILITIES}}
