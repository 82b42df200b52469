# Warnings and sanitizers for the project's own targets only; third-party headers are
# included as SYSTEM by their imported targets, so -Werror never trips on them.
function(cairn_target_options target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Woverloaded-virtual
                                           # Aggregates here give every member a default, so
                                           # leaving trailing ones out is deliberate.
                                           -Wno-missing-field-initializers)
  if(CAIRN_SANITIZE)
    # Every UBSan report stops the process, except that vptr reports go through
    # UBSAN_OPTIONS=halt_on_error (scripts/test sets it): the vptr check needs a spare file
    # descriptor, so a test that exhausts them on purpose lets its process carry on.
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined
                                             -fno-sanitize-recover=undefined -fsanitize-recover=vptr
                                             -fno-omit-frame-pointer)
    target_link_options(${target} PUBLIC -fsanitize=address,undefined)
  endif()
  if(CAIRN_TSAN)
    # -Wno-tsan: Boost.Asio's std::atomic_thread_fence, which TSan does not model, would
    # otherwise stop the build (GCC 12 warns about every use).
    target_compile_options(${target} PRIVATE -fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
    target_link_options(${target} PUBLIC -fsanitize=thread)
  endif()
endfunction()

# An executable's allocator: tcmalloc when CAIRN_TCMALLOC found it. Nothing calls into the
# library by name, so it is linked even where the linker drops unreferenced libraries.
set(CMAKE_LINK_LIBRARY_USING_NO_AS_NEEDED
    "LINKER:--push-state,--no-as-needed" "<LINK_ITEM>" "LINKER:--pop-state")
set(CMAKE_LINK_LIBRARY_USING_NO_AS_NEEDED_SUPPORTED TRUE)
function(cairn_allocator target)
  if(TCMALLOC_FOUND)
    target_link_libraries(${target} PRIVATE "$<LINK_LIBRARY:NO_AS_NEEDED,${TCMALLOC_LINK_LIBRARIES}>")
  endif()
endfunction()
