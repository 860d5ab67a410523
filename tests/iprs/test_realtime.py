"""IPR state changes reach the `ipr-<id>` channels group (real channel layer on Redis) after commit."""

from __future__ import annotations

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from aicdn_project import realtime
from iprs import services


async def _subscribe(group: str) -> str:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def _drain(group: str, channel: str) -> list[dict]:
    layer = get_channel_layer()
    events = []
    try:
        while True:
            events.append(await asyncio.wait_for(layer.receive(channel), timeout=2))
    except TimeoutError:
        return events
    finally:
        await layer.group_discard(group, channel)


def test_approval_publishes_state_change_after_commit(open_ipr, users, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    ipr = open_ipr()
    group = f"ipr-{ipr.pk}"
    channel = async_to_sync(_subscribe)(group)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.ipr_approve(reviewer=users["reviewer"], ipr_id=ipr.pk)
        services.ipr_approve(reviewer=users["reviewer2"], ipr_id=ipr.pk)
    assert realtime.flush(timeout=5)
    assert async_to_sync(_drain)(group, channel) == []  # nothing leaves before the transaction commits
    channel = async_to_sync(_subscribe)(group)
    for callback in callbacks:
        callback()
    assert realtime.flush(timeout=5)
    events = async_to_sync(_drain)(group, channel)
    assert [(e["type"], e["from"], e["to"], e["ipr"]) for e in events] == [("ipr.state", "open", "approved", ipr.pk)]
