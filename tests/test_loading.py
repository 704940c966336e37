"""The one loader of the parts settings name by a dotted path."""

from factory_bridge.factory import HttpFactoryClient, get_factory_client
from factory_bridge.publishers import InMemoryPublisher, get_publisher
from nudged.core.loading import load


def test_a_path_names_its_object_and_is_imported_once():
    assert load("factory_bridge.factory.HttpFactoryClient") is HttpFactoryClient
    before = load.cache_info().hits

    load("factory_bridge.factory.HttpFactoryClient")

    assert load.cache_info().hits == before + 1


def test_each_call_gets_a_fresh_instance_of_what_the_setting_names_now(settings):
    assert isinstance(get_factory_client(), HttpFactoryClient)
    assert get_factory_client() is not get_factory_client()

    settings.EVENT_PUBLISHER = "factory_bridge.publishers.InMemoryPublisher"

    assert isinstance(get_publisher(), InMemoryPublisher)
