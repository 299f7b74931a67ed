; Syntax highlighting for Flow.
;
; Capture names follow nvim-treesitter's conventions; Helix and Zed fall back
; along the dotted prefix (`@keyword.conditional` -> `@keyword`).
; No two patterns capture the same node, so the result does not depend on
; whether an editor lets the first (Helix) or the last (Neovim) match win.

(comment) @comment @spell

; ------------------------------------------------------------------ literals

(string) @string
(escape_sequence) @string.escape
(interpolation
  "{" @punctuation.special
  "}" @punctuation.special)
(regex) @string.regexp

[
  (number)
  (integer)
  (count)
  (duration)
  (money)
] @number

(boolean) @boolean
(null) @constant.builtin
(wildcard) @character.special
(wildcard_pattern) @character.special

; ------------------------------------------------------------------ types

((type_identifier) @type.builtin
  (#match? @type.builtin "^(string|number|int|bool|json)$"))
((type_identifier) @type
  (#not-match? @type "^(string|number|int|bool|json)$"))

; ------------------------------------------------------------------ names

(use_declaration
  name: (identifier) @type
  (#match? @type "^[A-Z]"))
(use_declaration
  name: (identifier) @variable
  (#not-match? @variable "^[A-Z]"))
(module_path (identifier) @module)

(model_declaration name: (identifier) @constant)
(model_declaration provider: (identifier) @function.call)
(resource_declaration name: (identifier) @constant)
(provider_declaration name: (identifier) @function)
(tool_declaration name: (identifier) @function)
(agent_declaration name: (identifier) @function)
(flow_declaration name: (identifier) @function)
(server_declaration name: (identifier) @module)
(mcp_clause server: (identifier) @module)
(eval_run_clause flow: (identifier) @function)
(score_clause name: (identifier) @label)
(raw_clause (identifier) @variable.parameter)

(parameter name: (identifier) @variable.parameter)
(field_declaration name: (field_identifier) @variable.member)
(member_expression
  property: (property_identifier) @function.builtin
  (#eq? @function.builtin "len"))
(member_expression
  property: (property_identifier) @variable.member
  (#not-eq? @variable.member "len"))
(pair key: (property_identifier) @property)
(budget_entry name: (identifier) @property)

(call function: (identifier) @function.call)
(named_argument name: (identifier) @variable.parameter)

(let_statement name: (identifier) @variable)
(for_step variable: (identifier) @variable)
(after_clause (identifier) @variable)
(check_statement name: (identifier) @label)
(approve_step name: (identifier) @label)
(llm_step model: (identifier) @constant)
(model_clause model: (identifier) @constant)
(tools_clause (identifier) @function)
(reads_clause (identifier) @constant)
(writes_clause (identifier) @constant)
(protocol_clause (identifier) @constant.builtin)
(env_reference
  "env" @variable.builtin
  name: (identifier) @constant)

(given_clause gate: (identifier) @label)
(given_clause target: (identifier) @function)
(call_count target: (identifier) @function)

; `output` in tests and evals, `expected` in evals.
((variable) @variable.builtin
  (#match? @variable.builtin "^(output|expected)$"))
((variable) @variable
  (#not-match? @variable "^(output|expected)$"))

(http_method) @constant.builtin
(effect_kind) @keyword.modifier
(retry_class) @constant.builtin
(decision) @constant.builtin
(notify_kind) @constant.builtin
(sample_rate) @number
(jitter) @keyword
(exact) @keyword.modifier
(body_encoding) @constant.builtin
(response_format) @constant.builtin

; ------------------------------------------------------------------ keywords

"use" @keyword.import
"type" @keyword.type
[
  "tool"
  "agent"
  "flow"
] @keyword.function
[
  "model"
  "resource"
  "provider"
  "server"
  "test"
  "eval"
  "let"
  "llm"
  "check"
  "require"
  "budget"
  "after"
  "fallback"
] @keyword
(approve_step "approve" @keyword)
(policy_clause "approve" @keyword)
(given_clause "approve" @keyword)
"return" @keyword.return
[
  "if"
  "else"
  "match"
] @keyword.conditional
[
  "for"
  "in"
  "parallel"
  "tolerate"
] @keyword.repeat
[
  "and"
  "or"
  "not"
] @keyword.operator

; Clause words: keywords only where a clause is expected.
[
  "http"
  "exec"
  "builtin"
  "header"
  "effect"
  "reads"
  "writes"
  "retry"
  "on"
  "backoff"
  "cap"
  "idempotency"
  "limit"
  "tokens"
  "tools"
  "may"
  "max_steps"
  "max_repeat"
  "instructions"
  "prompt"
  "system"
  "max_tokens"
  "show"
  "on_timeout"
  "escalate"
  "auto"
  "when"
  "sample"
  "max"
  "per"
  "day"
  "notify"
  "protocol"
  "base_url"
  "api_key"
  "price"
  "input"
  "output"
  "context"
  "run"
  "given"
  "returns"
  "fails"
  "approves"
  "rejects"
  "with"
  "expect"
  "failure"
  "called"
  "times"
  "query"
  "body"
  "format"
  "raw"
  "mcp"
  "command"
  "url"
  "expecting"
  "dataset"
  "row"
  "score"
  "weight"
  "threshold"
  "concurrency"
] @keyword
(timeout_clause "timeout" @keyword)
(server_env_clause "env" @keyword)
[
  "matching"
  "len"
  "schema"
] @keyword.type

; ------------------------------------------------------------------ operators

[
  "->"
  "=>"
  "="
  "=="
  "!="
  "<="
  ">="
  "<"
  ">"
  "|"
  "?"
  ".."
] @operator
(backoff "*" @operator)

; ------------------------------------------------------------------ punctuation

[
  "("
  ")"
  "["
  "]"
] @punctuation.bracket

; Braces, except the ones around an interpolation (captured above).
(use_declaration ["{" "}"] @punctuation.bracket)
(record_type ["{" "}"] @punctuation.bracket)
(provider_declaration ["{" "}"] @punctuation.bracket)
(price_clause ["{" "}"] @punctuation.bracket)
(tool_body ["{" "}"] @punctuation.bracket)
(agent_body ["{" "}"] @punctuation.bracket)
(budget ["{" "}"] @punctuation.bracket)
(flow_body ["{" "}"] @punctuation.bracket)
(check_statement ["{" "}"] @punctuation.bracket)
(llm_step ["{" "}"] @punctuation.bracket)
(approve_step ["{" "}"] @punctuation.bracket)
(escalate ["{" "}"] @punctuation.bracket)
(match_step ["{" "}"] @punctuation.bracket)
(block ["{" "}"] @punctuation.bracket)
(object ["{" "}"] @punctuation.bracket)
(test_declaration ["{" "}"] @punctuation.bracket)
(server_body ["{" "}"] @punctuation.bracket)
(eval_body ["{" "}"] @punctuation.bracket)

[
  ","
  "."
  ":"
] @punctuation.delimiter
