/* The few declarations of Falco's plugin API 3.x these test plugins need, written from the specification
 * (plugin_api.h / plugin_types.h) so that the tests check the agent's layout against an independent one. */
#pragma once
#include <stdint.h>

typedef void ss_plugin_t;
typedef void ss_instance_t;
typedef void ss_plugin_owner_t;

enum { RC_SUCCESS = 0, RC_FAILURE = 1, RC_TIMEOUT = -1, RC_EOF = 2 };
enum { FT_UINT64 = 8, FT_STRING = 9, FT_BOOL = 25, FT_IPADDR = 40 };

#pragma pack(push, 1)
typedef struct { uint64_t ts; uint64_t tid; uint32_t len; uint16_t type; uint32_t nparams; } evt_hdr;
#pragma pack(pop)

typedef struct { const evt_hdr* evt; uint64_t evtnum; const char* evtsrc; } event_input;
typedef struct { uint32_t len; const void* ptr; } byte_buffer;

typedef struct {
	union { const char** str; uint64_t* u64; uint32_t* u32; byte_buffer* buf; } res;
	uint64_t res_len;
	uint32_t field_id;
	const char* field;
	const char* arg_key;
	uint64_t arg_index;
	uint32_t arg_present;
	uint32_t ftype;
	uint32_t flist;
} extract_field;

typedef struct {
	ss_plugin_owner_t* owner;
	const char* (*get_owner_last_error)(ss_plugin_owner_t* o);
	uint32_t num_fields;
	extract_field* fields;
} extract_input; /* the members after `fields` are not read */

typedef struct {
	void* (*list_tables)(ss_plugin_owner_t* o, uint32_t* ntables);
	void* (*get_table)(ss_plugin_owner_t* o, const char* name, int key_type);
} tables_input; /* the members after `get_table` are not read */

typedef struct {
	const char* config;
	ss_plugin_owner_t* owner;
	const char* (*get_owner_last_error)(ss_plugin_owner_t* o);
	const tables_input* tables;
	void (*log_fn)(ss_plugin_owner_t* o, const char* component, const char* msg, int sev);
} init_input;

/* The data of a plugin event: after the 26-byte header, two u32 lengths and the u32 plugin id. */
#define EVENT_DATA(e) ((const char*)(e) + 38)
#define EVENT_DATA_LEN(e) (*(const uint32_t*)((const char*)(e) + 30))
