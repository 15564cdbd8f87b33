import pandas as pd
import pytest

from recommendations.training import train_bundle
from tests.recommendations.synth import OFFERS, synth_frames

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


@pytest.fixture(scope="session")
def frames():
    return synth_frames(n_members=1500, seed=7)


@pytest.fixture(scope="session")
def trained(frames):
    members, events = frames
    return train_bundle(members=members, events=events, offers=OFFERS, as_of=AS_OF, horizon_days=60)
