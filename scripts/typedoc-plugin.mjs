// TypeDoc plugin: names the entry points as users import them ('ivshmem', 'ivshmem/spec',
// 'ivshmem/testing') and files every documented declaration under a category by the folder it
// comes from, so the sources need no @category tags.
import { Comment, CommentTag, Converter, ReflectionKind } from 'typedoc';

const CATEGORIES = [
  [/\/src\/device\/|\/src\/mapping\.ts$/, 'Devices'],
  [/\/src\/server\/|\/src\/protocol\//, 'Server'],
  [/\/src\/channel\//, 'Channels'],
  [/\/src\/bus\//, 'Bus'],
  [/\/src\/testing\//, 'Lab'],
  [/\/src\/errors\.ts$/, 'Errors'],
  [/\/src\/spec\//, 'Spec'],
];

const MODULES = { index: 'ivshmem', spec: 'ivshmem/spec', testing: 'ivshmem/testing' };

/** @param {import('typedoc').Application} app */
export function load(app) {
  app.converter.on(Converter.EVENT_CREATE_DECLARATION, (context, reflection) => {
    if (reflection.kindOf(ReflectionKind.Module)) {
      reflection.name = MODULES[reflection.name] ?? reflection.name;
      return;
    }
    if (reflection.parent !== context.project && !reflection.parent?.kindOf(ReflectionKind.Module)) return;
    const file = context.getSymbolFromReflection?.(reflection)?.declarations?.[0]?.getSourceFile().fileName ?? reflection.sources?.[0]?.fullFileName ?? '';
    const category = CATEGORIES.find(([pattern]) => pattern.test(file))?.[1];
    if (!category) return;
    reflection.comment ??= new Comment();
    if (!reflection.comment.getTag('@category')) reflection.comment.blockTags.push(new CommentTag('@category', [{ kind: 'text', text: category }]));
  });
}
