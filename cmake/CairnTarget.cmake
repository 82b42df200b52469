# Warnings and sanitizers for the project's own targets only; third-party headers are
# included as SYSTEM by their imported targets, so -Werror never trips on them.
function(cairn_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Woverloaded-virtual
                                           # Aggregates here give every member a default, so
                                           # leaving trailing ones out is deliberate.
                                           -Wno-missing-field-initializers)
  if(CAIRN_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined
                                             -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  endif()
endfunction()
