" Vim filetype plugin for Flow, the typed workflow language checked by flowc.

if exists('b:did_ftplugin')
  finish
endif
let b:did_ftplugin = 1

setlocal commentstring=//\ %s
setlocal comments=://
setlocal formatoptions-=t formatoptions+=croql
setlocal expandtab shiftwidth=2 softtabstop=2
setlocal suffixesadd=.flow

" `%` jumps between the quotes of a triple-quoted string too (matchit).
let b:match_words = '"""\s*$:^\s*"""'

let b:undo_ftplugin = 'setlocal commentstring< comments< formatoptions< expandtab<'
      \ . ' shiftwidth< softtabstop< suffixesadd< | unlet! b:match_words'

" `:make` checks the current file; diagnostics go to the quickfix list
" (compiler/flowc.vim).
compiler flowc
let b:undo_ftplugin .= ' | setlocal makeprg< errorformat<'
