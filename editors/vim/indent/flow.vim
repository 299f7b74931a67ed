" Vim indent file for Flow: one level (shiftwidth) per open brace, bracket
" or parenthesis; lines starting with a closer go back one level; the text
" of triple-quoted strings is left alone.

if exists('b:did_indent')
  finish
endif
let b:did_indent = 1

setlocal indentexpr=GetFlowIndent(v:lnum)
setlocal indentkeys=0{,0},0),0],!^F,o,O
setlocal autoindent nosmartindent nocindent

let b:undo_indent = 'setlocal indentexpr< indentkeys< autoindent< smartindent< cindent<'

if exists('*GetFlowIndent')
  finish
endif

" The line without strings, regexes after `matching`, and comments.
function! s:Code(lnum) abort
  let line = getline(a:lnum)
  let line = substitute(line, '"""\%(\\.\|[^\\]\)\{-}"""', '""', 'g')
  let line = substitute(line, '""".*$', '""', '')
  let line = substitute(line, '"\%(\\.\|[^"\\]\)*"', '""', 'g')
  let line = substitute(line, '\<matching\s*/\%(\\.\|[^/\\]\)\+/', 'matching', 'g')
  let line = substitute(line, '//.*$', '', '')
  return line
endfunction

function! s:InTripleString(lnum) abort
  if !exists('g:syntax_on')
    return 0
  endif
  for id in synstack(a:lnum, 1)
    if synIDattr(id, 'name') ==# 'flowTripleString'
      return 1
    endif
  endfor
  return 0
endfunction

function! s:Triples(lnum) abort
  return len(split(getline(a:lnum), '"""', 1)) - 1
endfunction

function! GetFlowIndent(lnum) abort
  " The closing quotes of a multi-line string line up with its opening line.
  if getline(a:lnum) =~# '^\s*"""' && s:Triples(a:lnum) % 2 == 1
    let l = a:lnum - 1
    while l > 0 && s:Triples(l) % 2 == 0
      let l -= 1
    endwhile
    return l > 0 ? indent(l) : 0
  endif
  if s:InTripleString(a:lnum)
    return -1
  endif
  let prev = prevnonblank(a:lnum - 1)
  if prev == 0
    return 0
  endif
  let ind = indent(prev)
  " Closers at the start of the previous line already moved that line back.
  let code = substitute(s:Code(prev), '^\%(\s*[\]})]\)\+', '', '')
  let opens = len(substitute(code, '[^[{(]', '', 'g'))
  let closes = len(substitute(code, '[^\]})]', '', 'g'))
  " An unterminated `"""` on the previous line opens a multi-line string.
  if opens > closes || (s:Triples(prev) % 2 == 1 && getline(prev) !~# '^\s*"""')
    let ind += shiftwidth()
  elseif opens < closes
    let ind -= shiftwidth()
  endif
  if getline(a:lnum) =~# '^\s*[\]})]'
    let ind -= shiftwidth()
  endif
  return ind < 0 ? 0 : ind
endfunction
