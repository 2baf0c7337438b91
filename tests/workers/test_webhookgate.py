"""The deliverer's per-tenant shares: slots up to the share, then a queue per tenant."""

from workers.webhookgate import TenantGate


def test_a_tenant_over_its_share_waits_behind_itself_in_order_and_others_go_on() -> None:
    gate = TenantGate(per_tenant=2)
    assert gate.enter("a", "a1") and gate.enter("a", "a2")
    assert not gate.enter("a", "a3") and not gate.enter("a", "a4")
    assert not gate.enter("a", "a3")  # sent again by the reconciler: queued once
    assert gate.enter("b", "b1")  # another tenant is never behind "a"
    assert (gate.held("a"), gate.waiting("a")) == (2, 2)
    assert gate.next_or_leave("a") == "a3"  # the slot's holder takes the next, in order
    assert gate.next_or_leave("a") == "a4"
    assert gate.next_or_leave("a") is None and gate.held("a") == 1
    assert gate.next_or_leave("a") is None and gate.held("a") == 0
    assert gate.enter("a", "a5")
    assert gate.next_or_leave("b") is None and gate.held("b") == 0
