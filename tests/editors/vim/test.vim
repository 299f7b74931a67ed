" Tests for editors/vim, run by tests/editors/run.sh:
"   FLOW_REPO=/path/to/repo FLOW_VIM_OUT=/tmp/out vim -Nu NONE -i NONE -es -S tests/editors/vim/test.vim
" Writes one line per check to $FLOW_VIM_OUT: "ok - NAME" or "FAIL - NAME: why".

let s:root = $FLOW_REPO
let s:out = []
execute 'set runtimepath^=' . fnameescape(s:root . '/editors/vim')
filetype plugin indent on
syntax on

function! s:Result(ok, name, why) abort
  call add(s:out, (a:ok ? 'ok - ' : 'FAIL - ') . a:name . (a:ok ? '' : ': ' . a:why))
endfunction

" Filetype detection and ftplugin options.
execute 'edit ' . fnameescape(s:root . '/tests/editors/vim/highlight.flow')
call s:Result(&filetype ==# 'flow', 'vim: *.flow is detected as filetype flow', 'filetype=' . &filetype)
call s:Result(&commentstring ==# '// %s' && &shiftwidth == 2 && &expandtab,
      \ 'vim: ftplugin sets commentstring and 2-space indentation',
      \ 'commentstring=' . &commentstring . ' shiftwidth=' . &shiftwidth . ' expandtab=' . &expandtab)
call s:Result(exists('b:current_syntax') && b:current_syntax ==# 'flow', 'vim: syntax file loads', 'no b:current_syntax')

" Syntax assertions: `// ^ group` checks the character above the caret in
" the closest line above that is not an assertion; `// <- group` the one at
" the column of the `//`.
let s:failures = []
let s:count = 0
let s:target = 0
for s:lnum in range(1, line('$'))
  let s:line = getline(s:lnum)
  let s:m = matchlist(s:line, '^\(\s*\)//\s*\(<-\|\^\)\s*\(flow\w\+\)\s*$')
  if empty(s:m)
    let s:target = s:lnum
    continue
  endif
  let s:col = s:m[2] ==# '<-' ? len(s:m[1]) + 1 : stridx(s:line, '^') + 1
  let s:got = synIDattr(synID(s:target, s:col, 1), 'name')
  let s:count += 1
  if s:got !=# s:m[3]
    call add(s:failures, printf('%d:%d expected %s, got %s', s:target, s:col, s:m[3], s:got ==# '' ? 'none' : s:got))
  endif
endfor
call s:Result(empty(s:failures) && s:count > 0,
      \ printf('vim: syntax groups (%d assertions)', s:count), join(s:failures, '; '))

" Indentation: re-indenting a well-indented file changes nothing.
for s:file in glob(s:root . '/editors/vscode/test/fixtures/*.flow', 0, 1)
  execute 'edit! ' . fnameescape(s:file)
  let s:before = getline(1, '$')
  silent normal! gg=G
  let s:after = getline(1, '$')
  let s:diff = ''
  for s:i in range(len(s:before))
    if s:before[s:i] !=# s:after[s:i]
      let s:diff = printf('line %d: %s -> %s', s:i + 1, string(s:before[s:i]), string(s:after[s:i]))
      break
    endif
  endfor
  call s:Result(s:diff ==# '', 'vim: indent keeps ' . fnamemodify(s:file, ':t'), s:diff)
  set nomodified
endfor

" Indentation from scratch (no multi-line strings).
enew!
setfiletype flow
let s:want = [
      \ 'flow f(x: string) -> [string] {',
      \ '  budget { tokens 1k }',
      \ '  let a = for d in xs {',
      \ '    let r = g(',
      \ '      id: d,',
      \ '    )',
      \ '    r',
      \ '  }',
      \ '  let b = match x {',
      \ '    "a" => { k: [',
      \ '      1,',
      \ '    ] }',
      \ '    _ => 0',
      \ '  }',
      \ '  return a // {',
      \ '}',
      \ ]
call setline(1, map(copy(s:want), 'substitute(v:val, "^\\s\\+", "", "")'))
silent normal! gg=G
let s:got = getline(1, '$')
call s:Result(s:got ==# s:want, 'vim: indent from scratch', string(s:got))
set nomodified

" `:make` with the compiler plugin: a failing check becomes one quickfix
" entry per diagnostic, at the right line and (character) column.
if executable('flowc')
  let s:dir = tempname()
  call mkdir(s:dir, 'p')
  execute 'cd ' . fnameescape(s:dir)
  call writefile([
        \ 'type Ticket { id: string, title: string }',
        \ 'flow triage(t: Ticket) -> string {',
        \ '  budget { tokens 1k, cost $0.01, steps 5, wall 1m }',
        \ '  let label = { note: "ünï «»", title: t.titel }',
        \ '  return missing',
        \ '}',
        \ ], s:dir . '/broken.flow')
  execute 'edit! ' . fnameescape(s:dir . '/broken.flow')
  call s:Result(&makeprg =~# 'format short' && get(b:, 'current_compiler', '') ==# 'flowc',
        \ 'vim: ftplugin sets the flowc compiler', 'makeprg=' . &makeprg)
  silent make!
  let s:qf = getqflist()
  let s:got = map(copy(s:qf), 'printf("%s:%d:%d:%s:%s", fnamemodify(bufname(v:val.bufnr), ":t"), v:val.lnum, v:val.col, v:val.type, v:val.text)')
  let s:want = [
        \ 'broken.flow:4:42:e:[T002]: `Ticket` has no field `titel`',
        \ 'broken.flow:5:10:e:[N001]: there is no step or parameter named `missing`',
        \ ]
  call s:Result(s:got ==# s:want, 'vim: :make fills the quickfix list from flowc check', string(s:got))
  call s:Result(len(s:qf) == 2 && s:qf[0].vcol == 1 && s:qf[0].valid,
        \ 'vim: quickfix columns are character columns', string(s:qf))
  " A clean file leaves the list empty.
  call writefile(['flow ok(q: string) -> string {', '  budget { tokens 1k, cost $0.01, steps 5, wall 1m }', '  return q', '}'], s:dir . '/clean.flow')
  execute 'edit! ' . fnameescape(s:dir . '/clean.flow')
  silent make!
  call s:Result(empty(filter(getqflist(), 'v:val.valid')), 'vim: :make on a clean file gives no entries', string(getqflist()))
else
  call s:Result(0, 'vim: :make with the flowc compiler', 'flowc is not on PATH (tests/editors/run.sh puts it there)')
endif

call writefile(s:out, $FLOW_VIM_OUT)
qall!
