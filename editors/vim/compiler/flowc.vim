" Vim compiler file for Flow: `:compiler flowc`, then `:make` checks the
" current file and fills the quickfix list, one entry per diagnostic.
"
" `flowc check --format short` prints `file:line:col: severity[CODE]: message`
" on stdout, one line each; columns count characters, which `%v` reads
" (virtual columns, the same for text without tabs or wide characters).

if exists('current_compiler')
  finish
endif
let current_compiler = 'flowc'

if exists(':CompilerSet') != 2
  command -nargs=* CompilerSet setlocal <args>
endif

let s:cpo_save = &cpo
set cpo&vim

CompilerSet makeprg=flowc\ check\ --format\ short\ --color\ never\ %:S
" `%t` takes the `e` or `w` of error/warning, `%*[a-z]` skips the rest of
" the word, and the message keeps its code: `[T002]: no field titel`.
CompilerSet errorformat=%f:%l:%v:\ %t%*[a-z]%m,
      \%-G%.%#

let &cpo = s:cpo_save
unlet s:cpo_save
