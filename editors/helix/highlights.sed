# Rewrites editors/tree-sitter-flow/queries/highlights.scm (nvim-treesitter
# capture names) into Helix's theme scopes:
#   sed -f editors/helix/highlights.sed editors/tree-sitter-flow/queries/highlights.scm
s/ @spell//g
s/@number\b/@constant.numeric/g
s/@boolean\b/@constant.builtin.boolean/g
s/@character\.special\b/@special/g
s/@module\b/@namespace/g
s/@keyword\.import\b/@keyword.control.import/g
s/@keyword\.conditional\b/@keyword.control.conditional/g
s/@keyword\.repeat\b/@keyword.control.repeat/g
s/@keyword\.return\b/@keyword.control.return/g
s/@keyword\.modifier\b/@keyword.storage.modifier/g
s/@keyword\.type\b/@keyword.storage.type/g
s/@string\.escape\b/@constant.character.escape/g
s/@variable\.member\b/@variable.other.member/g
s/@property\b/@variable.other.member/g
s/@function\.call\b/@function/g
