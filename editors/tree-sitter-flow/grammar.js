/**
 * @file Tree-sitter grammar for Flow, the typed workflow language checked by flowc.
 *
 * Mirrors grammar/flow.pest (the authoritative grammar). Differences that
 * matter to editors only:
 *  - clause words (`effect`, `timeout`, `retry`, ...) are keywords only where
 *    the grammar expects them, so they stay usable as names elsewhere, as in pest;
 *    reserved words are not enforced (`let type = ...` parses here, pest rejects it);
 *  - `effect read reads r` keeps `reads r` as a sibling clause instead of a child;
 *  - `{{` in a string is always an escaped brace (pest first tries `{` + object);
 *  - `len 1..5` is three tokens here (one in pest), so a comment may sit inside it.
 *
 * tests/tidy.rs checks that every word of flow.pest appears in this file, and
 * tests/editors/run.sh that every .flow file of the repository parses with it.
 */

/// <reference types="tree-sitter-cli/dsl" />
// @ts-check

const PREC = {
  or: 1,
  and: 2,
  not: 3,
  compare: 4,
  postfix: 5,
  call: 6,
};

/** `rule (, rule)* ,?` (possibly empty) */
function commaSepTrailing(rule) {
  return optional(seq(rule, repeat(seq(',', rule)), optional(',')));
}

/** `rule (, rule)*` */
function commaSep1(rule) {
  return seq(rule, repeat(seq(',', rule)));
}

module.exports = grammar({
  name: 'flow',

  extras: $ => [/\s/, '\uFEFF', $.comment],

  word: $ => $.identifier,

  supertypes: $ => [$._expression, $._item],

  conflicts: $ => [
    // `a: T len` / `a: T matching`: a constraint on `a`, or the next field
    // named `len` / `matching` when no comma separates them.
    [$._type_term, $.constrained_type],
    [$.constrained_type],
    // `-> exact {`: an exact record, or a type named `exact` and then a body.
    [$._type_atom, $.exact],
  ],

  rules: {
    source_file: $ => repeat($._item),

    _item: $ => choice(
      $.use_declaration,
      $.type_declaration,
      $.model_declaration,
      $.resource_declaration,
      $.tool_declaration,
      $.agent_declaration,
      $.flow_declaration,
      $.test_declaration,
      $.eval_declaration,
      $.provider_declaration,
      $.server_declaration,
    ),

    // ------------------------------------------------------------ lexical

    comment: _ => token(seq('//', /[^\n]*/)),

    identifier: _ => /[A-Za-z_][A-Za-z0-9_]*/,

    number: _ => /-?[0-9]+(\.[0-9]+)?/,
    integer: _ => /[0-9]+/,
    count: _ => /[0-9]+(\.[0-9]+)?[kM]?/,
    duration: _ => /[0-9]+(ms|s|m|h|d)/,
    money: _ => /\$[0-9]+(\.[0-9]+)?/,

    boolean: _ => choice('true', 'false'),
    null: _ => 'null',

    string: $ => choice(
      seq(
        '"',
        repeat(choice($.string_content, $.escape_sequence, $.interpolation)),
        token.immediate('"'),
      ),
      seq(
        '"""',
        repeat(choice(
          alias($._triple_string_content, $.string_content),
          alias($._triple_string_quotes, $.string_content),
          $.escape_sequence,
          $.interpolation,
        )),
        token.immediate(prec(1, '"""')),
      ),
    ),

    string_content: _ => token.immediate(prec(1, /[^"\\{}\n]+/)),
    // Text of a triple-quoted string: may span lines and hold one or two
    // quotes in a row; three close the string.
    _triple_string_content: _ => token.immediate(prec(1, /([^"\\{}]|"[^"\\{}]|""[^"\\{}])+/)),
    // One or two quotes right before `{`, `}`, `\` or the closing quotes.
    _triple_string_quotes: _ => token.immediate(prec(1, /""?/)),

    escape_sequence: _ => token.immediate(prec(1, choice(
      /\\["\\ntr{}]/,
      /\\u\{[0-9A-Fa-f]{1,6}\}/,
      '{{',
      '}}',
    ))),

    interpolation: $ => seq(
      token.immediate(prec(1, '{')),
      $._expression,
      '}',
    ),

    regex: _ => token(seq(
      '/',
      repeat1(choice(/\\[^\n]/, /[^/\\\n]/)),
      '/',
    )),

    // ------------------------------------------------------------ items

    // use std.models.{openai, anthropic}
    // use "./shared.flow".{Invoice, search_invoices}
    use_declaration: $ => seq(
      'use',
      field('path', $.module_path),
      '{',
      commaSep1(field('name', $.identifier)),
      optional(','),
      '}',
    ),

    module_path: $ => choice(
      seq($.string, '.'),
      repeat1(seq($.identifier, '.')),
    ),

    // type Invoice { ... }   type Priority = "low" | "high"
    type_declaration: $ => seq(
      'type',
      field('name', alias($.identifier, $.type_identifier)),
      choice(
        seq('=', field('type', $._type)),
        field('type', $.record_type),
      ),
    ),

    _type: $ => choice($.union_type, $._type_term),

    union_type: $ => seq($._type_term, repeat1(seq('|', $._type_term))),

    _type_term: $ => choice($._type_atom, $.optional_type, $.constrained_type),

    optional_type: $ => seq($._type_atom, '?'),

    constrained_type: $ => seq(
      choice($._type_atom, $.optional_type),
      repeat1($._constraint),
    ),

    _type_atom: $ => choice(
      $.list_type,
      $.record_type,
      $.schema_type,
      $.string,
      $.number,
      $.boolean,
      alias($.identifier, $.type_identifier),
      // A type named `exact` (pest tries `exact {` first, then the name).
      alias('exact', $.type_identifier),
    ),

    list_type: $ => seq('[', $._type, ']'),

    // `exact { … }` rejects undeclared fields in results; `{ … }` drops them.
    record_type: $ => seq(
      optional($.exact),
      '{',
      repeat(seq($.field_declaration, optional(','))),
      '}',
    ),
    exact: _ => 'exact',

    field_declaration: $ => seq(
      field('name', choice(
        alias($.identifier, $.field_identifier),
        // `len` and `matching` also start a constraint of the previous field
        // when no comma separates the two; `:` decides.
        alias(choice('len', 'matching'), $.field_identifier),
      )),
      optional('?'),
      ':',
      field('type', $._type),
    ),

    schema_type: $ => seq('schema', $.string),

    _constraint: $ => choice($.matching_constraint, $.length_constraint, $.bound_constraint),

    matching_constraint: $ => seq('matching', $.regex),

    length_constraint: $ => seq('len', $.range),

    range: $ => choice(
      seq(optional($.integer), '..', optional($.integer)),
      $.integer,
    ),

    bound_constraint: $ => seq(choice('>=', '<=', '>', '<'), $.number),

    // model analyst = openai("gpt-4o-mini") { temperature: 0.2, max_tokens: 800 }
    model_declaration: $ => seq(
      'model',
      field('name', $.identifier),
      '=',
      field('provider', $.identifier),
      '(',
      field('model', $.string),
      ')',
      optional(field('config', $.object)),
    ),

    resource_declaration: $ => seq('resource', field('name', $.identifier)),

    provider_declaration: $ => seq(
      'provider',
      field('name', $.identifier),
      '{',
      repeat(choice(
        $.protocol_clause,
        $.base_url_clause,
        $.api_key_clause,
        $.price_clause,
      )),
      '}',
    ),

    protocol_clause: $ => seq('protocol', $.identifier),

    base_url_clause: $ => seq('base_url', choice(
      seq($.env_reference, optional(seq('or', $.string))),
      $.string,
    )),

    api_key_clause: $ => seq('api_key', $.env_reference),

    price_clause: $ => seq(
      'price',
      field('model', choice($.string, $.wildcard)),
      '{',
      'input', field('input', $.money), optional(','),
      'output', field('output', $.money), optional(','),
      // the model's context window in tokens
      optional(seq('context', field('context', $.count), optional(','))),
      '}',
    ),

    wildcard: _ => '*',

    // An MCP server: a program spoken to over stdio, or a Streamable HTTP URL.
    // server files { command ["npx", "mcp-server-filesystem", "."] env "TOKEN" "{env.TOKEN}" }
    server_declaration: $ => seq(
      'server',
      field('name', $.identifier),
      field('body', $.server_body),
    ),

    server_body: $ => seq('{', repeat(choice(
      $.command_clause,
      $.url_clause,
      $.header_clause,
      $.server_env_clause,
      $.timeout_clause,
    )), '}'),

    command_clause: $ => seq('command', '[', commaSep1($.string), optional(','), ']'),
    url_clause: $ => seq('url', $.string),
    server_env_clause: $ => seq('env', field('name', $.string), field('value', $.string)),

    // tool search(q: string) -> [Hit] { http GET "..." effect read timeout 10s }
    tool_declaration: $ => seq(
      'tool',
      field('name', $.identifier),
      field('parameters', $.parameters),
      '->',
      field('return_type', $._type),
      field('body', $.tool_body),
    ),

    tool_body: $ => seq('{', repeat($._tool_clause), '}'),

    parameters: $ => seq('(', commaSepTrailing($.parameter), ')'),

    parameter: $ => seq(
      field('name', $.identifier),
      optional('?'),
      ':',
      field('type', $._type),
    ),

    _tool_clause: $ => choice(
      $.http_clause,
      $.exec_clause,
      $.builtin_clause,
      $.header_clause,
      $.effect_clause,
      $.reads_clause,
      $.writes_clause,
      $.timeout_clause,
      $.retry_clause,
      $.idempotency_clause,
      $.limit_clause,
      $.query_clause,
      $.body_clause,
      $.format_clause,
      $.raw_clause,
      $.mcp_clause,
    ),

    http_clause: $ => seq('http', field('method', $.http_method), field('url', $.string)),
    http_method: _ => choice('GET', 'POST', 'PUT', 'PATCH', 'DELETE'),
    exec_clause: $ => seq('exec', '[', commaSep1($.string), optional(','), ']'),
    builtin_clause: $ => seq('builtin', $.string),
    header_clause: $ => seq('header', field('name', $.string), field('value', $.string)),
    effect_clause: $ => seq('effect', $.effect_kind),
    effect_kind: _ => choice('read', 'write', 'irreversible'),
    reads_clause: $ => seq('reads', commaSep1($.identifier)),
    writes_clause: $ => seq('writes', commaSep1($.identifier)),
    timeout_clause: $ => seq('timeout', $.duration),
    idempotency_clause: $ => seq('idempotency', $.string),
    limit_clause: $ => seq('limit', $.count, 'tokens'),
    // query { state: state, per_page: 100 }   body { event: "COMMENT" }   body form { q: q }
    query_clause: $ => seq('query', $.object),
    body_clause: $ => seq('body', optional(field('encoding', $.body_encoding)), field('value', $._expression)),
    body_encoding: _ => choice('json', 'form'),
    // format text: the response body is the result as text
    format_clause: $ => seq('format', $.response_format),
    response_format: _ => choice('json', 'text'),
    // raw path: `{path}` goes into the URL as written (slashes kept)
    raw_clause: $ => seq('raw', commaSep1($.identifier)),
    // mcp files "read_file": the server's tool (by default the tool's own name)
    mcp_clause: $ => seq('mcp', field('server', $.identifier), optional(field('tool', $.string))),

    // retry 3 on rate_limit, timeout backoff 1s * 4 cap 30s jitter
    retry_clause: $ => seq(
      'retry',
      field('attempts', $.integer),
      optional($.retry_on),
      optional($.backoff),
      optional($.cap),
      optional($.jitter),
    ),
    retry_on: $ => seq('on', commaSep1($.retry_class)),
    retry_class: _ => choice('rate_limit', 'timeout', 'server_error', 'connection', 'invalid'),
    backoff: $ => seq('backoff', $.duration, optional(seq('*', $.number))),
    cap: $ => seq('cap', $.duration),
    jitter: _ => 'jitter',

    // agent researcher(topic: string) -> Notes { model m tools [a, b] may read max_steps 10 }
    agent_declaration: $ => seq(
      'agent',
      field('name', $.identifier),
      optional(field('parameters', $.parameters)),
      '->',
      field('return_type', $._type),
      field('body', $.agent_body),
    ),

    agent_body: $ => seq('{', repeat($._agent_clause), '}'),

    _agent_clause: $ => choice(
      $.model_clause,
      $.tools_clause,
      $.may_clause,
      $.max_steps_clause,
      $.max_repeat_clause,
      $.instructions_clause,
      $.budget,
      $.timeout_clause,
      $.retry_clause,
    ),

    model_clause: $ => seq('model', field('model', $.identifier)),
    tools_clause: $ => seq('tools', '[', commaSepTrailing($.identifier), ']'),
    may_clause: $ => seq('may', $.effect_kind),
    max_steps_clause: $ => seq('max_steps', $.integer),
    max_repeat_clause: $ => seq('max_repeat', $.integer),
    instructions_clause: $ => seq('instructions', $.string),

    // budget { tokens 100k, cost $1.00, steps 25, tool_calls 40, wall 15m }
    budget: $ => seq('budget', '{', repeat(seq($.budget_entry, optional(','))), '}'),
    budget_entry: $ => seq(
      field('name', $.identifier),
      field('value', choice($.money, $.duration, $.count)),
    ),

    // ------------------------------------------------------------ flows

    flow_declaration: $ => seq(
      'flow',
      field('name', $.identifier),
      field('parameters', $.parameters),
      '->',
      field('return_type', $._type),
      field('body', $.flow_body),
    ),

    flow_body: $ => seq('{', repeat(choice(
      $.budget,
      $.let_statement,
      $.check_statement,
      $.return_statement,
    )), '}'),

    let_statement: $ => seq(
      'let',
      field('name', $.identifier),
      '=',
      field('value', $._step),
      repeat(choice($.after_clause, $.fallback_clause)),
    ),

    after_clause: $ => seq('after', commaSep1($.identifier)),
    fallback_clause: $ => seq('fallback', choice($.call, $._expression)),

    check_statement: $ => seq(
      'check',
      field('name', $.identifier),
      '{',
      repeat($.require_clause),
      '}',
    ),
    require_clause: $ => seq('require', field('condition', $._expression), ',', field('message', $.string)),

    return_statement: $ => seq('return', $._expression),

    _step: $ => choice(
      $.llm_step,
      $.approve_step,
      $.for_step,
      $.if_step,
      $.match_step,
      $.call,
      $._expression,
    ),

    call: $ => prec(PREC.call, seq(
      field('function', $.identifier),
      field('arguments', $.arguments),
    )),

    arguments: $ => seq('(', commaSepTrailing($.named_argument), ')'),

    named_argument: $ => seq(
      field('name', $.identifier),
      ':',
      field('value', $._expression),
    ),

    llm_step: $ => seq(
      'llm',
      field('model', $.identifier),
      '->',
      field('type', $._type),
      '{',
      repeat(choice(
        $.prompt_clause,
        $.system_clause,
        $.retry_clause,
        $.timeout_clause,
        $.max_tokens_clause,
        $.budget,
      )),
      '}',
    ),
    prompt_clause: $ => seq('prompt', $.string),
    system_clause: $ => seq('system', $.string),
    max_tokens_clause: $ => seq('max_tokens', $.count),

    approve_step: $ => seq(
      'approve',
      field('name', $.identifier),
      '{',
      repeat(seq(choice(
        $.show_clause,
        $.timeout_clause,
        $.on_timeout_clause,
        $.policy_clause,
        $.sample_clause,
        $.notify_clause,
      ), optional(','))),
      '}',
    ),
    show_clause: $ => seq('show', $._expression),
    on_timeout_clause: $ => seq('on_timeout', choice($.decision, $.escalate)),
    decision: _ => choice('approve', 'reject'),
    escalate: $ => seq(
      'escalate',
      '{',
      repeat(seq(choice($.notify_clause, $.timeout_clause), optional(','))),
      '}',
    ),
    policy_clause: $ => seq('auto', 'approve', 'when', field('condition', $._expression)),
    sample_clause: $ => seq(
      'sample',
      choice(seq($.sample_rate, optional(seq('max', $.sample_per_day))), $.sample_per_day),
    ),
    sample_rate: _ => /[0-9]+(\.[0-9]+)?%/,
    sample_per_day: $ => seq($.integer, 'per', 'day'),
    notify_clause: $ => seq('notify', $.notify_kind, choice($.env_reference, $.string)),
    notify_kind: _ => 'webhook',

    for_step: $ => seq(
      'for',
      field('variable', $.identifier),
      'in',
      field('iterable', $._expression),
      optional($.parallel),
      optional($.tolerate),
      field('body', $.block),
    ),
    parallel: $ => seq('parallel', $.integer),
    // tolerate 5: up to 5 iterations may fail; the loop's value lists them.
    tolerate: $ => seq('tolerate', $.integer),

    if_step: $ => seq(
      'if',
      field('condition', $._expression),
      field('consequence', $.block),
      optional(seq('else', field('alternative', choice($.if_step, $.block)))),
    ),

    match_step: $ => seq(
      'match',
      field('value', $._expression),
      '{',
      repeat($.match_arm),
      '}',
    ),
    match_arm: $ => seq(
      field('pattern', choice($.wildcard_pattern, $.string, $.number, $.boolean)),
      '=>',
      field('body', choice($.block, $._step)),
      optional(','),
    ),
    wildcard_pattern: _ => '_',

    block: $ => seq(
      '{',
      repeat(choice($.let_statement, $.check_statement)),
      $._step,
      '}',
    ),

    // ------------------------------------------------------------ expressions

    _expression: $ => choice(
      $.binary_expression,
      $.unary_expression,
      $.comparison_expression,
      $._postfix,
    ),

    binary_expression: $ => choice(
      prec.left(PREC.or, seq(field('left', $._expression), field('operator', 'or'), field('right', $._expression))),
      prec.left(PREC.and, seq(field('left', $._expression), field('operator', 'and'), field('right', $._expression))),
    ),

    unary_expression: $ => prec(PREC.not, seq(
      field('operator', 'not'),
      field('argument', choice($.unary_expression, $.comparison_expression, $._postfix)),
    )),

    comparison_expression: $ => prec(PREC.compare, seq(
      field('left', $._postfix),
      field('operator', choice('==', '!=', '<=', '>=', '<', '>')),
      field('right', $._postfix),
    )),

    _postfix: $ => choice($._primary, $.member_expression, $.index_expression),

    member_expression: $ => prec(PREC.postfix, seq(
      field('object', $._postfix),
      '.',
      field('property', alias($.identifier, $.property_identifier)),
    )),

    index_expression: $ => prec(PREC.postfix, seq(
      field('object', $._postfix),
      '[',
      field('index', $._expression),
      ']',
    )),

    _primary: $ => choice(
      $.string,
      $.number,
      $.boolean,
      $.null,
      $.object,
      $.list,
      $.env_reference,
      alias($.identifier, $.variable),
      $.parenthesized_expression,
    ),

    parenthesized_expression: $ => seq('(', $._expression, ')'),

    object: $ => seq('{', repeat(seq($.pair, optional(','))), '}'),

    pair: $ => seq(
      field('key', alias($.identifier, $.property_identifier)),
      ':',
      field('value', $._expression),
    ),

    list: $ => seq('[', commaSepTrailing($._expression), ']'),

    env_reference: $ => seq('env', '.', field('name', $.identifier)),

    // ------------------------------------------------------------ tests

    // test "name" { run f(x: 1)  given tool returns ...  expect output.len == 1  expect failure }
    test_declaration: $ => seq(
      'test',
      field('name', $.string),
      '{',
      repeat(choice($.run_clause, $.given_clause, $.expect_clause)),
      '}',
    ),

    run_clause: $ => seq('run', $.call),

    given_clause: $ => seq('given', choice(
      seq('approve', field('gate', $.identifier), choice($.approves, $.rejects)),
      seq(field('target', $.identifier), choice($.returns, $.fails)),
    )),
    approves: $ => seq('approves', optional(seq('with', $._expression))),
    rejects: $ => seq('rejects', optional($.string)),
    returns: $ => seq('returns', $._expression),
    fails: $ => seq('fails', $.string),

    // `expect failure` is tried before an expression, as in pest: right after
    // `expect`, the word `failure` is the keyword (`expect failure.x` does not
    // parse, `expect failures == 1` does); it stays a name everywhere else.
    expect_clause: $ => seq('expect', choice($.expect_failure, $.call_count, $._expression)),
    // expect failure   expect failure "text the error contains"
    expect_failure: $ => seq('failure', optional(field('message', $.string))),
    call_count: $ => seq(field('target', $.identifier), 'called', $.integer, 'times'),

    // ------------------------------------------------------------ evals

    // eval "triage quality" {
    //   run triage expecting { category: Category }
    //   dataset "./triage.eval.jsonl"
    //   row { ticket_id: "482913" } expecting { category: "billing" }
    //   score category weight 2 = output.category == expected.category
    //   score tone = llm grader -> Judgement { prompt "..." }
    //   threshold 0.8  budget { cost $2.00 }  concurrency 4
    // }
    eval_declaration: $ => seq(
      'eval',
      field('name', $.string),
      field('body', $.eval_body),
    ),

    eval_body: $ => seq('{', repeat(choice(
      $.eval_run_clause,
      $.dataset_clause,
      $.row_clause,
      $.score_clause,
      $.threshold_clause,
      $.concurrency_clause,
      $.budget,
    )), '}'),

    eval_run_clause: $ => seq(
      'run',
      field('flow', $.identifier),
      optional(seq('expecting', field('type', $._type))),
    ),
    dataset_clause: $ => seq('dataset', $.string),
    row_clause: $ => seq(
      'row',
      field('input', $._expression),
      optional(seq('expecting', field('expected', $._expression))),
    ),
    score_clause: $ => seq(
      'score',
      field('name', $.identifier),
      optional(seq('weight', field('weight', $.number))),
      '=',
      field('value', choice($.llm_step, $._expression)),
    ),
    threshold_clause: $ => seq('threshold', $.number),
    concurrency_clause: $ => seq('concurrency', $.integer),
  },
});
