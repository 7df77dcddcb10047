from django.urls import path

from .views import actions, limits, manage, notifications, onboarding, ops, pages, tokens

urlpatterns = [
    path("livez", ops.livez, name="livez"),
    path("healthz", ops.healthz, name="healthz"),
    path("metrics", ops.metrics_view, name="metrics"),
    path("", pages.home, name="home"),
    path("teams/new/", manage.team_create, name="team_create"),
    path("teams/<slug:team>/", pages.team_pools, name="team"),
    path("teams/<slug:team>/pools/new/", manage.pool_create, name="pool_create"),
    path("teams/<slug:team>/members/", manage.members, name="members"),
    path("teams/<slug:team>/members/<int:user_id>/", manage.member_change, name="member_change"),
    path("favicon.ico", pages.favicon, name="favicon"),
    path("teams/<slug:team>/notifications/", notifications.channels, name="channels"),
    path(
        "teams/<slug:team>/notifications/<int:channel_id>/",
        notifications.channel_detail,
        name="channel",
    ),
    path(
        "teams/<slug:team>/notifications/<int:channel_id>/test/",
        notifications.channel_test,
        name="channel_test",
    ),
    path(
        "teams/<slug:team>/notifications/<int:channel_id>/delete/",
        notifications.channel_delete,
        name="channel_delete",
    ),
    path(
        "teams/<slug:team>/notifications/pools/<slug:pool>/minimum/",
        notifications.pool_minimum,
        name="pool_minimum",
    ),
    path("pools/<slug:pool>/", pages.pool_detail, name="pool"),
    path("pools/<slug:pool>/rows/", pages.pool_rows, name="pool_rows"),
    path("pools/<slug:pool>/settings/", manage.pool_settings, name="pool_settings"),
    path("pools/<slug:pool>/add/", onboarding.add_account, name="add_account"),
    path("pools/<slug:pool>/add/tokens/", onboarding.add_by_tokens, name="add_by_tokens"),
    path("pools/<slug:pool>/add/file/", onboarding.add_by_file, name="add_by_file"),
    path("pools/<slug:pool>/login/start/", onboarding.login_start, name="login_start"),
    path("pools/<slug:pool>/login/", onboarding.login_complete, name="login_complete"),
    path("pools/<slug:pool>/invites/", onboarding.invite_create, name="invite_create"),
    path(
        "pools/<slug:pool>/invites/<int:invite_id>/revoke/",
        onboarding.invite_revoke,
        name="invite_revoke",
    ),
    path("pools/<slug:pool>/keys/", actions.consumer_keys, name="consumer_keys"),
    path(
        "pools/<slug:pool>/keys/<int:key_id>/revoke/",
        actions.consumer_key_revoke,
        name="consumer_key_revoke",
    ),
    path("pools/<slug:pool>/keys/<int:key_id>/limits/", limits.key_limits, name="key_limits"),
    path("me/tokens/", tokens.api_tokens, name="api_tokens"),
    path("me/tokens/<int:token_id>/revoke/", tokens.api_token_revoke, name="api_token_revoke"),
    path("invite/<str:token>/", onboarding.invite, name="invite"),
    path("accounts/<int:account_id>/", pages.account_detail, name="account"),
    path(
        "accounts/<int:account_id>/actions/<slug:action>/",
        actions.account_action,
        name="account_action",
    ),
    path("accounts/<int:account_id>/disable/", actions.account_disable, name="account_disable"),
    path("accounts/<int:account_id>/delete/", actions.account_delete, name="account_delete"),
]
