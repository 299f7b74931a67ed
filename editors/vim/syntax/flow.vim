" Vim syntax file
" Language:   Flow (typed workflow language checked by flowc)
" Filenames:  *.flow

if exists('b:current_syntax')
  finish
endif

let s:cpo_save = &cpo
set cpo&vim

syn case match
syn sync minlines=200

" Names (lowest priority: everything below overrides them) -------------------

syn match flowIdentifier  "\<\h\w*\>"
syn match flowType        "\<\u\w*\>"
syn match flowBuiltinType "\<\%(string\|number\|int\|bool\|json\)\>"
syn match flowCall        "\<\h\w*\>\ze\s*("
" `name:` and `name?:` — record fields, object keys, parameters, named arguments.
syn match flowField       "\<\h\w*\>\ze\s*?\=\s*:"
syn match flowMember      "\.\@1<=\s*\h\w*"
syn match flowWildcard    "\<_\>\ze\s*=>"

" Keywords -------------------------------------------------------------------
" Matches rather than `syn keyword`, so that a keyword used as a field name
" (`type: string`) or member (`x.type`) is not highlighted as a keyword.

let s:name = '\%(\.\s*\)\@<!\<%s\>\%(\s*?\=\s*:\)\@!'
function! s:Words(group, words) abort
  execute 'syn match ' . a:group . ' "' . printf(s:name, '\%(' . join(a:words, '\|') . '\)') . '"'
endfunction

call s:Words('flowInclude',     ['use'])
call s:Words('flowTypedef',     ['type'])
call s:Words('flowDeclaration', ['model', 'resource', 'tool', 'agent', 'flow', 'test', 'eval', 'provider', 'let'])
call s:Words('flowConditional', ['if', 'else', 'match'])
call s:Words('flowRepeat',      ['for', 'in', 'parallel'])
call s:Words('flowStatement',   ['return', 'llm', 'approve', 'check', 'require', 'budget', 'after', 'fallback'])
call s:Words('flowLogical',     ['and', 'or', 'not'])
call s:Words('flowBoolean',     ['true', 'false'])
call s:Words('flowNull',        ['null'])

" Clause words are not reserved: they are keywords only where a clause is
" expected, recognised by what follows them.
syn match flowClause "\<\%(http\)\>\ze\s\+\%(GET\|POST\|PUT\|PATCH\|DELETE\)\>"
syn match flowClause "\<\%(exec\|tools\|command\)\>\ze\s*\["
syn match flowClause "\<\%(builtin\|header\|idempotency\|instructions\|prompt\|system\|url\|dataset\)\>\ze\s*\""
syn match flowClause "\<\%(effect\|may\)\>\ze\s\+\%(read\|write\|irreversible\)\>"
syn match flowClause "\<\%(reads\|writes\|protocol\)\>\ze\s\+\h"
syn match flowClause "\<\%(timeout\|retry\|backoff\|cap\|limit\|max_steps\|max_repeat\|max_tokens\|context\|threshold\|concurrency\|weight\)\>\ze\s*\d"
syn match flowClause "\<on\>\ze\s\+\%(rate_limit\|timeout\|server_error\|connection\|invalid\)\>"
syn match flowClause "\<\%(show\|jitter\)\>\%(\s*[:=(.,)\]}]\)\@!"
syn match flowClause "\<\%(\d\+\%(\.\d\+\)\=[kM]\=\s\+\)\@<=tokens\>"
syn match flowClause "\<on_timeout\>\ze\s\+\%(approve\|reject\)\>"
syn match flowClause "\<on_timeout\>\ze\s\+escalate\>"
syn match flowClause "\%(\<on_timeout\s\+\)\@<=escalate\>"
" Gate policies and notifications: `auto approve when …`, `sample 2% max 20 per day`,
" `notify webhook …`.
syn match flowClause "\<auto\>\ze\s\+approve\s\+when\>"
syn match flowClause "\<sample\>\ze\s*\d"
syn match flowClause "\<max\>\ze\s\+\d\+\s\+per\>"
syn match flowClause "\%(\d\s\+\)\@<=per\>\ze\s\+day\>"
syn match flowClause "\%(\<per\s\+\)\@<=day\>"
syn match flowClause "\<notify\>\ze\s\+webhook\>"
syn match flowDecision "\%(\<notify\s\+\)\@<=webhook\>"
syn match flowClause "\<\%(base_url\|api_key\)\>\ze\s*\%(env\>\|\"\)"
syn match flowClause "\<price\>\ze\s*[\"*]"
syn match flowClause "\<\%(input\|output\)\>\ze\s*\$"
syn match flowClause "\<matching\>\ze\s*/"
syn match flowClause "\<len\>\ze\s*\%(\d\|\.\.\)"
syn match flowClause "\<schema\>\ze\s*\""
" `for x in xs [parallel N] tolerate M {`: not reserved, a keyword before a count.
syn match flowRepeat "\<tolerate\>\ze\s*\d"
" Tool clauses of HTTP and MCP tools. `body` takes any expression, so it is a
" clause word unless what follows makes it a name (`body: …`, `body.x`, `body and …`).
syn match flowClause "\<query\>\ze\s*{"
syn match flowClause "\<body\>\%(\s*[:=.,)\]}?(]\|\s*$\|\s*//\|\s\+\%(and\|or\)\>\)\@!"
syn match flowClause "\<format\>\ze\s\+\%(json\|text\)\>"
syn match flowClause "\<\%(raw\|mcp\)\>\ze\s\+\%(\%(and\|or\|in\)\>\)\@!\h"
" Server items: `server NAME {`; the word is not reserved.
syn match flowDeclaration "\<server\>\ze\s\+\h\w*\s*{"
syn match flowModifier "\<exact\>\ze\s*{"

" Test blocks.
syn match flowTestWord "\<run\>\ze\s\+\h\w*\s*("
" Eval blocks: `run FLOW expecting T`, `row EXPR expecting EXPR`, `score NAME [weight W] = …`.
syn match flowTestWord "\<run\>\ze\s\+\h\w*\>\%(\s*(\)\@!"
syn match flowTestWord "\<expecting\>\%(\s*[:=(.,)\]}]\)\@!"
syn match flowTestWord "\<row\>\%(\s*[:=.,)\]}?(]\|\s*$\|\s*//\|\s\+\%(and\|or\|in\)\>\)\@!"
syn match flowTestWord "\<score\>\ze\s\+\h\w*\s*\%(weight\>\|=[^=]\)"
syn match flowTestWord "\<\%(given\|expect\|returns\|fails\|approves\|rejects\|with\|called\|times\)\>\%(\s*[:=(.,)\]}]\)\@!"
" `expect failure` and `expect failure "text"`; `failure` is a name elsewhere.
syn match flowTestWord "\%(\<expect\s\+\)\@<=failure\>"
syn match flowBuiltinVar "\<output\>\%(\s*[:$]\)\@!"
" `expected` in an eval's scores: the dataset row's expected value.
syn match flowBuiltinVar "\%(\.\s*\)\@<!\<expected\>\%(\s*:\)\@!"

" Values that only a clause gives meaning to.
syn match flowHttpMethod "\%(\<http\s\+\)\@<=\%(GET\|POST\|PUT\|PATCH\|DELETE\)\>"
syn match flowEffect     "\%(\<\%(effect\|may\)\s\+\)\@<=\%(read\|write\|irreversible\)\>"
syn match flowRetryClass "\%(\<on\s\+\%(\h\w*\s*,\s*\)*\)\@<=\%(rate_limit\|timeout\|server_error\|connection\|invalid\)\>"
syn match flowDecision   "\%(\<on_timeout\s\+\)\@<=\%(approve\|reject\)\>"
syn match flowProtocol   "\%(\<protocol\s\+\)\@<=\h\w*"
syn match flowOperator   "\%(\<price\s\+\)\@<=\*"
syn match flowEncoding   "\%(\<body\s\+\)\@<=\%(json\|form\)\>"
syn match flowEncoding   "\%(\<format\s\+\)\@<=\%(json\|text\)\>"

" Names that a declaration or a step introduces.
syn match flowTypeName     "\%(\<type\s\+\)\@<=\h\w*"
syn match flowFunctionName "\%(\<\%(tool\|agent\|flow\|provider\)\s\+\)\@<=\h\w*"
syn match flowConstantName "\%(\<\%(model\|resource\|llm\)\s\+\)\@<=\h\w*"
syn match flowLabel        "\%(\<\%(check\|approve\)\s\+\)\@<=\h\w*"
" `auto approve when`: after `auto`, `approve` names no gate (defined after
" flowLabel, so it wins at the same position).
syn match flowClause "\%(\<auto\s\+approve\s\+\)\@<=when\>"
syn match flowVariableName "\%(\<\%(let\|for\)\s\+\)\@<=\h\w*"
syn match flowConstantName "\%(\<server\s\+\)\@<=\h\w*\ze\s*{"
syn match flowConstantName "\%(\<mcp\s\+\)\@<=\h\w*"
syn match flowLabel        "\%(\<score\s\+\)\@<=\h\w*\ze\s*\%(weight\>\|=[^=]\)"
syn match flowFunctionName "\%(\<run\s\+\)\@<=\%(\%(in\|and\|or\)\>\)\@!\h\w*\>\%(\s*(\)\@!"

" Environment variables.
syn match flowEnv "\<env\>\%(\s*\.\s*\h\w*\)\=" contains=flowEnvName
syn match flowEnvName "\%(\.\s*\)\@<=\h\w*" contained
" `env "NAME" "value"` in a server: a clause (defined after flowEnv to win).
syn match flowClause "\<env\>\ze\s*\""

" Numbers (later definitions win at the same position).
syn match flowNumber   "-\=\<\d\+\%(\.\d\+\)\=\>"
syn match flowCount    "\<\d\+\%(\.\d\+\)\=[kM]\>"
syn match flowDuration "\<\d\+\%(ms\|s\|m\|h\|d\)\>"
syn match flowMoney    "\$\d\+\%(\.\d\+\)\=\>"

" Operators and punctuation.
syn match flowOperator "->\|=>\|==\|!=\|<=\|>=\|[<>=|?]\|\.\."
syn match flowOperator "\%(\d\%(ms\|[smhd]\)\=\s*\)\@<=\*"

" Regular expressions (after `matching`).
syn match flowRegex "/\%(\\.\|[^/\\]\)\+/" contains=flowRegexEscape
syn match flowRegexEscape "\\." contained

" Strings with `{expr}` interpolation.
syn region flowInterpolation matchgroup=flowInterpolationDelimiter start="{" end="}" contained contains=TOP
syn match flowEscape "\\[\"\\ntr{}]\|\\u{\x\{1,6}}\|{{\|}}" contained
syn region flowString start=+"+ skip=+\\\\\|\\"+ end=+"+ end=+$+ contains=flowEscape,flowInterpolation
syn region flowTripleString start=+"""+ end=+"""+ contains=flowEscape,flowInterpolation fold

" Comments last: `//` starts a comment everywhere outside strings.
syn keyword flowTodo TODO FIXME XXX NOTE contained
syn match flowComment "//.*$" contains=flowTodo,@Spell

" Folding on braces.
syn region flowFold start="{" end="}" transparent fold

hi def link flowIdentifier             Identifier
hi def link flowType                   Type
hi def link flowBuiltinType            Type
hi def link flowTypeName               Type
hi def link flowCall                   Function
hi def link flowFunctionName           Function
hi def link flowField                  Identifier
hi def link flowMember                 Identifier
hi def link flowWildcard               Special
hi def link flowInclude                Include
hi def link flowTypedef                Typedef
hi def link flowDeclaration            Keyword
hi def link flowConditional            Conditional
hi def link flowRepeat                 Repeat
hi def link flowStatement              Statement
hi def link flowLogical                Operator
hi def link flowBoolean                Boolean
hi def link flowNull                   Constant
hi def link flowClause                 Keyword
hi def link flowTestWord               Keyword
hi def link flowBuiltinVar             Special
hi def link flowHttpMethod             Constant
hi def link flowEffect                 StorageClass
hi def link flowModifier               StorageClass
hi def link flowEncoding               Constant
hi def link flowRetryClass             Constant
hi def link flowDecision               Constant
hi def link flowProtocol               Constant
hi def link flowConstantName           Constant
hi def link flowLabel                  Label
hi def link flowVariableName           Identifier
hi def link flowEnv                    Special
hi def link flowEnvName                Constant
hi def link flowNumber                 Number
hi def link flowCount                  Number
hi def link flowDuration               Number
hi def link flowMoney                  Number
hi def link flowOperator               Operator
hi def link flowRegex                  String
hi def link flowRegexEscape            SpecialChar
hi def link flowEscape                 SpecialChar
hi def link flowInterpolationDelimiter Delimiter
hi def link flowString                 String
hi def link flowTripleString           String
hi def link flowTodo                   Todo
hi def link flowComment                Comment

delfunction s:Words
unlet s:name

let b:current_syntax = 'flow'

let &cpo = s:cpo_save
unlet s:cpo_save
