"""A local simulated Anthropic OAuth provider for tests, benchmarks and demos.

    from simulator import SimulatedAnthropic, Fault

    with SimulatedAnthropic(latency=0.0) as sim:
        account = sim.add_account()
        sim.inject("usage", Fault.status(503), times=1)
        os.environ.update(sim.env())

Never the app's default provider: the app only talks to it when its ANTHROPIC_*_URL settings
point here. Standard library only.
"""

from simulator.accounts import SimAccount
from simulator.faults import Fault
from simulator.oauth import POLICY_MESSAGE, pkce_challenge
from simulator.provider import SimStats, SimulatedAnthropic

__all__ = [
    "POLICY_MESSAGE",
    "Fault",
    "SimAccount",
    "SimStats",
    "SimulatedAnthropic",
    "pkce_challenge",
]
