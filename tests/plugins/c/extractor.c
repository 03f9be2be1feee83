/* An extractor-only plugin for the agent's tests: adds `extra.len` and `extra.upper` to source "testsrc"
 * (EXTRACT_SOURCES: other sources, a JSON array); `extra.upper` is suggested for outputs (addOutput). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "host_abi.h"

typedef struct { char err[64]; uint64_t len; char upper[64]; const char* str; } state;

const char* plugin_get_required_api_version(void) { return "3.0.0"; }
const char* plugin_get_version(void) { return "0.1.0"; }
const char* plugin_get_name(void) { return "testextra"; }
const char* plugin_get_description(void) { return "test extractor"; }
const char* plugin_get_contact(void) { return "tests"; }
#ifndef EXTRACT_SOURCES
#define EXTRACT_SOURCES "[\"testsrc\"]"
#endif
const char* plugin_get_extract_event_sources(void) { return EXTRACT_SOURCES; }
const char* plugin_get_fields(void) {
	return "[{\"type\": \"uint64\", \"name\": \"extra.len\", \"desc\": \"data length\"},"
	       "{\"type\": \"string\", \"name\": \"extra.upper\", \"desc\": \"data in upper case\","
	       " \"addOutput\": true}]";
}
ss_plugin_t* plugin_init(const init_input* in, int32_t* rc) { *rc = RC_SUCCESS; return calloc(1, sizeof(state)); }
void plugin_destroy(ss_plugin_t* s) { free(s); }
const char* plugin_get_last_error(ss_plugin_t* s) { return ((state*)s)->err; }

int32_t plugin_extract_fields(ss_plugin_t* p, const event_input* evt, const extract_input* in) {
	state* s = p;
	uint32_t len = EVENT_DATA_LEN(evt->evt);
	for(uint32_t f = 0; f < in->num_fields; f++) {
		extract_field* req = &in->fields[f];
		if(req->field_id == 0) {
			s->len = len; req->res.u64 = &s->len; req->res_len = 1;
		} else {
			uint32_t i;
			for(i = 0; i < len && i < sizeof(s->upper) - 1; i++) s->upper[i] = (char)toupper(EVENT_DATA(evt->evt)[i]);
			s->upper[i] = 0;
			s->str = s->upper; req->res.str = &s->str; req->res_len = 1;
		}
	}
	return RC_SUCCESS;
}
