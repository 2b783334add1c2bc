"""kimberlite.eventsourcing against the eventsourcing library's own test cases, unmodified.

Each library case is subclassed twice: on disk (a fresh data directory per test) and in
memory (``KIMBERLITE_PATH=:memory:``). Only ``create_recorder`` (and, for the factory and
application cases, the environment) is supplied here; no library test is overridden.
``optional_test_insert_subscribe`` is the library's subscription test, which persistence
modules that support ``subscribe()`` run under the name ``test_insert_subscribe`` (as the
library does for its POPO and PostgreSQL modules).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytest

pytest.importorskip("eventsourcing", reason="pip install 'kimberlite-storage[eventsourcing]'")

from eventsourcing.persistence import (  # noqa: E402
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests.application import ExampleApplicationTestCase  # noqa: E402
from eventsourcing.tests.persistence import (  # noqa: E402
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment  # noqa: E402

from kimberlite.eventsourcing import (  # noqa: E402
    KimberliteAggregateRecorder,
    KimberliteApplicationRecorder,
    KimberliteFactory,
    KimberliteProcessRecorder,
    KimberliteTrackingRecorder,
)


class OnDisk:
    """A fresh data directory per test; the factory is closed and the directory removed."""

    def kimberlite_path(self) -> str:
        self._kmb_dir = tempfile.mkdtemp(prefix="kmb-es-")
        return os.path.join(self._kmb_dir, "data")

    def factory(self) -> KimberliteFactory:
        # fsync off keeps the library's timing-bound cases quick; durability is tested in
        # test_eventsourcing_crash.py.
        f = KimberliteFactory(Environment(env={"KIMBERLITE_PATH": self.kimberlite_path(),
                                               "KIMBERLITE_FSYNC": "n"}))
        self.addCleanup(self._cleanup, f)  # type: ignore[attr-defined]
        return f

    def _cleanup(self, f: KimberliteFactory) -> None:
        f.close()
        shutil.rmtree(self._kmb_dir, ignore_errors=True)


class InMemory(OnDisk):
    def kimberlite_path(self) -> str:
        self._kmb_dir = ""
        return ":memory:"


class _Aggregate:
    def create_recorder(self) -> AggregateRecorder:
        return self.factory().aggregate_recorder()  # type: ignore[attr-defined]


class _Application:
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()  # type: ignore[attr-defined]


class _Subscribe(_Application):
    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()  # type: ignore[attr-defined]


class _Tracking:
    def create_recorder(self) -> TrackingRecorder:
        return self.factory().tracking_recorder()  # type: ignore[attr-defined]


class _Process:
    def create_recorder(self) -> ProcessRecorder:
        return self.factory().process_recorder()  # type: ignore[attr-defined]


class TestAggregateRecorderOnDisk(OnDisk, _Aggregate, AggregateRecorderTestCase):
    pass


class TestAggregateRecorderInMemory(InMemory, _Aggregate, AggregateRecorderTestCase):
    pass


class TestApplicationRecorderOnDisk(OnDisk, _Subscribe, ApplicationRecorderTestCase):
    pass


class TestApplicationRecorderInMemory(InMemory, _Subscribe, ApplicationRecorderTestCase):
    pass


class TestTrackingRecorderOnDisk(OnDisk, _Tracking, TrackingRecorderTestCase):
    pass


class TestTrackingRecorderInMemory(InMemory, _Tracking, TrackingRecorderTestCase):
    pass


class TestProcessRecorderOnDisk(OnDisk, _Process, ProcessRecorderTestCase):
    pass


class TestProcessRecorderInMemory(InMemory, _Process, ProcessRecorderTestCase):
    pass


class TestNonInterleavingOnDisk(OnDisk, _Application, NonInterleavingNotificationIDsBaseCase):
    pass


class TestNonInterleavingInMemory(InMemory, _Application,
                                  NonInterleavingNotificationIDsBaseCase):
    pass


class _Factory(InfrastructureFactoryTestCase[KimberliteFactory]):
    path = ":memory:"

    class TrackingRecorderSubclass(KimberliteTrackingRecorder):
        pass

    def setUp(self) -> None:
        if self.path != ":memory:":
            tmp = tempfile.mkdtemp(prefix="kmb-es-")
            self.addCleanup(shutil.rmtree, tmp, True)
            path = os.path.join(tmp, "data")
        else:
            path = self.path
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = "kimberlite.eventsourcing"
        self.env["KIMBERLITE_PATH"] = path
        super().setUp()

    def expected_factory_class(self) -> type[KimberliteFactory]:
        return KimberliteFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return KimberliteAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return KimberliteApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return KimberliteTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return self.TrackingRecorderSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return KimberliteProcessRecorder


class TestInfrastructureFactoryInMemory(_Factory):
    path = ":memory:"


class TestInfrastructureFactoryOnDisk(_Factory):
    path = "disk"


class _WithKimberlite:
    expected_factory_topic = "kimberlite.eventsourcing:KimberliteFactory"
    path = ":memory:"

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        if self.path != ":memory:":
            tmp = tempfile.mkdtemp(prefix="kmb-es-")
            self.addCleanup(shutil.rmtree, tmp, True)  # type: ignore[attr-defined]
            path = os.path.join(tmp, "data")
        else:
            path = self.path
        self._saved: dict[str, Any] = {}
        for k, v in (("PERSISTENCE_MODULE", "kimberlite.eventsourcing"),
                     ("KIMBERLITE_PATH", path)):
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v

    def tearDown(self) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        super().tearDown()  # type: ignore[misc]


class TestExampleApplicationInMemory(_WithKimberlite, ExampleApplicationTestCase):
    path = ":memory:"


class TestExampleApplicationOnDisk(_WithKimberlite, ExampleApplicationTestCase):
    path = "disk"


del AggregateRecorderTestCase, ApplicationRecorderTestCase, TrackingRecorderTestCase
del ProcessRecorderTestCase, NonInterleavingNotificationIDsBaseCase
del InfrastructureFactoryTestCase, ExampleApplicationTestCase
