"""An SQS input named by its queue name, as Falco's cloudtrail plugin takes it (`open_params: sqs://NAME`)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.sources.cloudtrail.test_sqs import (
    Evaluator,
    Tally,
    assert_once,
    body,
    consuming,
    make_consumer,
    upload,
    wait_until,
)

pytest_plugins = ["tests.sources.cloudtrail.test_sqs"]  # its s3, sqs, bucket and records fixtures


@pytest.mark.server
def test_a_queue_name_is_resolved_to_its_url_and_consumed(aws_endpoint: str, s3: Any, sqs: Any, bucket: str,
                                                          records: list[dict[str, Any]]) -> None:
    name = f"trail-{uuid.uuid4().hex[:12]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sample = records[:20]
    sqs.send_message(QueueUrl=url, MessageBody=body("cloudtrail", bucket, upload(s3, bucket, sample, chunk=20),
                                                    is_sns=False))
    tally = Tally()
    consumer = make_consumer(aws_endpoint, name)
    with consuming(consumer, Evaluator(tally)):
        assert consumer.queue_url == url
        assert tally.wait_for(lambda: len(tally.ids) >= len(sample))
        assert wait_until(lambda: consumer.metrics()["messages_deleted"] == 1)
    assert_once(tally.ids, sample)
