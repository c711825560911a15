"""Schemathesis hooks for CREVID's document (loaded by server/tests/api/openapi.rs).

`PUT /api/contents/{id}/music` takes the audio file itself as its body, in one of the
audio types the document lists; schemathesis ships serializers for JSON, forms, text and
pictures only, so audio bodies are sent as the bytes generated for them.
"""

import schemathesis

AUDIO = (
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/ogg",
    "audio/opus",
    "audio/flac",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
)


@schemathesis.serializer(*AUDIO)
def audio_bytes(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return {"data": bytes(value)}
    return {"data": str(value).encode("utf-8")}
