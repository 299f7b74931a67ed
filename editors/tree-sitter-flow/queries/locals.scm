; Scopes, definitions and references, for "highlight references" and
; go-to-definition inside one file.

; Scopes
(source_file) @local.scope
(tool_declaration) @local.scope
(agent_declaration) @local.scope
(flow_declaration) @local.scope
(block) @local.scope
(test_declaration) @local.scope
(eval_declaration) @local.scope

; Definitions
(parameter name: (identifier) @local.definition.parameter)
(let_statement name: (identifier) @local.definition.var)
(for_step variable: (identifier) @local.definition.var)
(approve_step name: (identifier) @local.definition.var)
(check_statement name: (identifier) @local.definition.var)
(model_declaration name: (identifier) @local.definition.var)
(resource_declaration name: (identifier) @local.definition.var)
(tool_declaration name: (identifier) @local.definition.function)
(agent_declaration name: (identifier) @local.definition.function)
(flow_declaration name: (identifier) @local.definition.function)
(provider_declaration name: (identifier) @local.definition.function)
(server_declaration name: (identifier) @local.definition.namespace)
(type_declaration name: (type_identifier) @local.definition.type)
(use_declaration name: (identifier) @local.definition.import)

; References
(variable) @local.reference
(type_identifier) @local.reference
(call function: (identifier) @local.reference)
(after_clause (identifier) @local.reference)
(tools_clause (identifier) @local.reference)
(reads_clause (identifier) @local.reference)
(writes_clause (identifier) @local.reference)
(llm_step model: (identifier) @local.reference)
(model_clause model: (identifier) @local.reference)
(given_clause target: (identifier) @local.reference)
(given_clause gate: (identifier) @local.reference)
(call_count target: (identifier) @local.reference)
(mcp_clause server: (identifier) @local.reference)
(eval_run_clause flow: (identifier) @local.reference)
(raw_clause (identifier) @local.reference)
