/* A source plugin for the agent's tests: source "testsrc" (id 999), events numbered 1..count with data "evt-N".
 * init_config keys (an init schema checks them): count, fail_at (next_batch fails when reaching event N, after
 * delivering the events before it), extract_fail_at (extraction fails for event N), refuse (init fails),
 * block_ms (the first next_batch sleeps that long, as a plugin waiting for its input).
 * The first next_batch returns SS_PLUGIN_TIMEOUT, then batches of two events. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "host_abi.h"

#ifndef REQUIRED_API
#define REQUIRED_API "3.0.0"
#endif
#define PLUGIN_ID 999

typedef struct {
	char err[256];
	uint64_t count, fail_at, extract_fail_at, block_ms;
	uint64_t u64[4];
	const char* strs[2];
	char str_storage[2][64];
	uint32_t b;
	byte_buffer ip;
	unsigned char ip_bytes[4];
	void (*log_fn)(ss_plugin_owner_t*, const char*, const char*, int);
	ss_plugin_owner_t* owner;
} state;

typedef struct {
	uint64_t next, calls;
	char storage[2][64];
	evt_hdr* ptrs[2];
} instance;

static uint64_t key_value(const char* config, const char* key) {
	const char* at = strstr(config, key);
	return at ? strtoull(at + strlen(key) + 1, NULL, 10) : 0; /* past the colon; strtoull skips blanks */
}

const char* plugin_get_required_api_version(void) { return REQUIRED_API; }
const char* plugin_get_version(void) { return "1.2.3"; }
const char* plugin_get_name(void) { return "testsrc"; }
const char* plugin_get_description(void) { return "test source"; }
const char* plugin_get_contact(void) { return "tests"; }
uint32_t plugin_get_id(void) { return PLUGIN_ID; }
const char* plugin_get_event_source(void) { return "testsrc"; }
const char* plugin_get_init_schema(int* type) {
	*type = 1;
	return "{\"type\": \"object\", \"additionalProperties\": false, \"properties\": {"
	       "\"count\": {\"type\": \"integer\"}, \"fail_at\": {\"type\": \"integer\"},"
	       "\"extract_fail_at\": {\"type\": \"integer\"}, \"refuse\": {\"type\": \"boolean\"},"
	       "\"block_ms\": {\"type\": \"integer\"}}}";
}
const char* plugin_get_fields(void) {
	return "[{\"type\": \"uint64\", \"name\": \"test.num\", \"desc\": \"event number\"},"
	       "{\"type\": \"string\", \"name\": \"test.msg\", \"desc\": \"event data\"},"
	       "{\"type\": \"bool\", \"name\": \"test.even\", \"desc\": \"number is even\"},"
	       "{\"type\": \"uint64\", \"name\": \"test.pair\", \"isList\": true, \"desc\": \"number and its double\"},"
	       "{\"type\": \"ipaddr\", \"name\": \"test.ip\", \"desc\": \"10.0.0.number\"},"
	       "{\"type\": \"string\", \"name\": \"test.key\", \"arg\": {\"isRequired\": true, \"isKey\": true},"
	       " \"desc\": \"the key argument, echoed\"},"
	       "{\"type\": \"string\", \"name\": \"test.absent\", \"desc\": \"never has a value\"}]";
}

ss_plugin_t* plugin_init(const init_input* in, int32_t* rc) {
	state* s = calloc(1, sizeof(state));
	const char* config = in->config ? in->config : "";
	s->log_fn = in->log_fn;
	s->owner = in->owner;
	/* The host must hand over a usable tables input, as SDK-built plugins dereference it. */
	uint32_t ntables = 99;
	if(in->tables == NULL || in->tables->list_tables(in->owner, &ntables) == NULL || ntables != 0) {
		snprintf(s->err, sizeof(s->err), "host tables input unusable");
		*rc = RC_FAILURE;
		return s;
	}
	if(strstr(config, "\"refuse\"") && strstr(config, "true")) {
		snprintf(s->err, sizeof(s->err), "refused: the test config asks to refuse");
		*rc = RC_FAILURE;
		return s;
	}
	s->count = key_value(config, "\"count\"");
	s->fail_at = key_value(config, "\"fail_at\"");
	s->extract_fail_at = key_value(config, "\"extract_fail_at\"");
	s->block_ms = key_value(config, "\"block_ms\"");
	s->log_fn(s->owner, NULL, "initialised", 6);
	*rc = RC_SUCCESS;
	return s;
}

void plugin_destroy(ss_plugin_t* s) { free(s); }
const char* plugin_get_last_error(ss_plugin_t* s) { return ((state*)s)->err; }

ss_instance_t* plugin_open(ss_plugin_t* s, const char* params, int32_t* rc) {
	instance* i = calloc(1, sizeof(instance));
	i->next = 1;
	*rc = RC_SUCCESS;
	return i;
}

void plugin_close(ss_plugin_t* s, ss_instance_t* h) { free(h); }

static evt_hdr* encode(instance* i, int slot, uint64_t n) {
	char data[16];
	uint32_t data_len = (uint32_t)snprintf(data, sizeof(data), "evt-%llu", (unsigned long long)n);
	char* e = i->storage[slot];
	evt_hdr h = {1000 + n, 0, 38 + data_len, 322, 2};
	uint32_t lens[3] = {4, data_len, 0}; /* plugin id 0: the host fills in ours */
	memcpy(e, &h, sizeof(h));
	memcpy(e + 26, lens, sizeof(lens));
	memcpy(e + 38, data, data_len);
	return (evt_hdr*)e;
}

int32_t plugin_next_batch(ss_plugin_t* p, ss_instance_t* h, uint32_t* nevts, evt_hdr*** evts) {
	state* s = p;
	instance* i = h;
	*nevts = 0;
	if(i->calls++ == 0) {
		struct timespec pause = {(time_t)(s->block_ms / 1000), (long)(s->block_ms % 1000) * 1000000L};
		nanosleep(&pause, NULL);
		return RC_TIMEOUT;
	}
	while(*nevts < 2 && i->next <= s->count) {
		if(s->fail_at && i->next == s->fail_at) {
			snprintf(s->err, sizeof(s->err), "disk on fire at event %llu", (unsigned long long)i->next);
			*evts = i->ptrs;
			return RC_FAILURE;
		}
		i->ptrs[*nevts] = encode(i, (int)*nevts, i->next);
		(*nevts)++;
		i->next++;
	}
	*evts = i->ptrs;
	return *nevts ? RC_SUCCESS : RC_EOF;
}

int32_t plugin_extract_fields(ss_plugin_t* p, const event_input* evt, const extract_input* in) {
	state* s = p;
	uint64_t n = strtoull(EVENT_DATA(evt->evt) + 4, NULL, 10);
	if(strcmp(evt->evtsrc, "testsrc") != 0 || evt->evt->type != 322) {
		snprintf(s->err, sizeof(s->err), "unexpected event input");
		return RC_FAILURE;
	}
	if(s->extract_fail_at && n == s->extract_fail_at) {
		snprintf(s->err, sizeof(s->err), "cannot extract from event %llu", (unsigned long long)n);
		return RC_FAILURE;
	}
	for(uint32_t f = 0; f < in->num_fields; f++) {
		extract_field* req = &in->fields[f];
		switch(req->field_id) {
		case 0: s->u64[0] = n; req->res.u64 = s->u64; req->res_len = 1; break;
		case 1:
			snprintf(s->str_storage[0], 64, "%.*s", (int)EVENT_DATA_LEN(evt->evt), EVENT_DATA(evt->evt));
			s->strs[0] = s->str_storage[0]; req->res.str = s->strs; req->res_len = 1; break;
		case 2: s->b = (n % 2) == 0; req->res.u32 = &s->b; req->res_len = 1; break;
		case 3: s->u64[2] = n; s->u64[3] = 2 * n; req->res.u64 = &s->u64[2]; req->res_len = 2; break;
		case 4:
			s->ip_bytes[0] = 10; s->ip_bytes[1] = 0; s->ip_bytes[2] = 0; s->ip_bytes[3] = (unsigned char)n;
			s->ip.len = 4; s->ip.ptr = s->ip_bytes; req->res.buf = &s->ip; req->res_len = 1; break;
		case 5:
			snprintf(s->str_storage[1], 64, "key=%s", req->arg_present ? req->arg_key : "(none)");
			s->strs[1] = s->str_storage[1]; req->res.str = &s->strs[1]; req->res_len = 1; break;
		default: req->res_len = 0; break;
		}
	}
	return RC_SUCCESS;
}
