"""System checks of the factory bridge's settings."""

from factory_bridge.checks import check_visibility_outlasts_a_factory_call


def test_the_defaults_pass(settings):
    settings.SQS_VISIBILITY_TIMEOUT = 30
    settings.FACTORY_CONNECT_TIMEOUT, settings.FACTORY_READ_TIMEOUT = 3.0, 10.0

    assert check_visibility_outlasts_a_factory_call(None) == []


def test_a_visibility_shorter_than_one_factory_call_is_an_error(settings):
    settings.SQS_VISIBILITY_TIMEOUT = 10
    settings.FACTORY_CONNECT_TIMEOUT, settings.FACTORY_READ_TIMEOUT = 3.0, 10.0

    [error] = check_visibility_outlasts_a_factory_call(None)

    assert error.id == "factory_bridge.E002"
    assert "SQS_VISIBILITY_TIMEOUT (10 s) must be longer than one factory call" in error.msg
    assert "(15 s:" in error.msg
