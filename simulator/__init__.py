"""A local simulated Anthropic (OAuth, usage, profile, Messages API) for tests, benchmarks, demos.

    from simulator import SimulatedAnthropic, Fault

    with SimulatedAnthropic(latency=0.0) as sim:
        account = sim.add_account()
        sim.inject("usage", Fault.status(503), times=1)
        sim.inject("messages", Fault.api_error(429, retry_after=30), account=account, times=1)
        os.environ.update(sim.env())
        sim.messages_requests()  # what the Messages API got, and who hung up early

Never the app's default provider: the app only talks to it when its ANTHROPIC_*_URL settings
point here. Standard library only.
"""

from simulator.accounts import SimAccount
from simulator.faults import Fault
from simulator.messages import MessagesRequest, input_tokens, reply_text
from simulator.oauth import POLICY_MESSAGE, pkce_challenge
from simulator.provider import SimStats, SimulatedAnthropic

__all__ = [
    "POLICY_MESSAGE",
    "Fault",
    "MessagesRequest",
    "SimAccount",
    "SimStats",
    "SimulatedAnthropic",
    "input_tokens",
    "pkce_challenge",
    "reply_text",
]
