// Package schemas embeds Roster's wire schemas: a JSON Schema (draft 2020-12) per
// request, reply and event body, the error-code registry (errors.json) and the
// AsyncAPI 3.0 document listing every subject (asyncapi.yaml).
//
// Request and reply schemas are named <service>.<operation>.<request|response>.json;
// events, notices, stream messages and the policy have files of their own
// (session.event.json, session.state.json, msg.stream.json, policy.json, …); shared
// definitions live in common.json and <service>.types.json (msg.common.json). Tests across the repository validate real messages
// against these files (see pkg/schematest), so the documents cannot drift from the code.
package schemas

import "embed"

// FS holds every schema and document in this directory.
//
//go:embed *.json *.yaml
var FS embed.FS
